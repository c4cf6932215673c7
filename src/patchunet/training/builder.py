"""One way from configs to the objects `fit` trains: used by the train stage, every tuning trial
and the benchmarks, so that they train the same thing the same way."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler

from patchunet.core.config import AugmentConfig, InstanceHead, ModelConfig, TrainConfig
from patchunet.core.resources import worker_count
from patchunet.data.augment import build_augmentation
from patchunet.data.dataset import PatchDataset
from patchunet.data.patches import PatchSet
from patchunet.model.unet import PatchUNet
from patchunet.training.distributed import Ranks
from patchunet.training.lifetime import loader_worker_init
from patchunet.training.run_log import EpochLogger

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Training:
    """A model, its loaders and its per-epoch logger, ready for `fit`."""

    model: PatchUNet
    train_loader: DataLoader
    val_loader: DataLoader
    log_epoch: EpochLogger


def build_training(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    augment_cfg: AugmentConfig,
    train_patches: PatchSet,
    val_patches: PatchSet,
    *,
    label: str = "",
    checkpoint_dir: Path | None = None,
    ranks: Ranks | None = None,
) -> Training:
    """The model (initial weights from `train.seed` alone), data sets, loaders and epoch logger.

    `label` starts each epoch's log line (e.g. "trial 3 "); `checkpoint_dir`, where given, is where
    `fit` writes the checkpoints the logger sends to the active MLflow run. `ranks`, under torchrun,
    shards the loaders (see `make_loaders`).
    """
    train_set, val_set = make_datasets(model_cfg.instance_head, train_cfg, augment_cfg, train_patches, val_patches)
    torch.manual_seed(train_cfg.seed)
    model = PatchUNet(model_cfg)
    train_loader, val_loader = make_loaders(train_set, val_set, train_cfg, ranks)
    return Training(model, train_loader, val_loader, EpochLogger(train_cfg.epochs, label, checkpoint_dir))


def make_datasets(
    head: InstanceHead,
    train_cfg: TrainConfig,
    augment_cfg: AugmentConfig,
    train_patches: PatchSet,
    val_patches: PatchSet,
) -> tuple[PatchDataset, PatchDataset]:
    """Train patches, augmented online when `train.online_augment`; val patches as they are. Both
    carry the contact map as a last target channel when `train.contact_weight` > 0."""
    augmentation = build_augmentation(augment_cfg) if train_cfg.online_augment else None
    contact = train_cfg.contact_weight > 0
    train_set = PatchDataset(train_patches, augmentation, seed=train_cfg.seed, head=head, contact=contact)
    return train_set, PatchDataset(val_patches, head=head, contact=contact)


def make_loaders(
    train_set: PatchDataset, val_set: PatchDataset, cfg: TrainConfig, ranks: Ranks | None = None
) -> tuple[DataLoader, DataLoader]:
    """The train loader shuffles with its own generator seeded by `train.seed`, which `fit` checkpoints.

    Given `ranks` of several processes, each rank loads its share instead (`sharded_loaders`).
    """
    # a final batch of one patch would break BatchNorm at a 1x1 bottleneck
    drop_last = len(train_set) > cfg.batch_size
    if ranks is not None and ranks.world_size > 1:
        return sharded_loaders(train_set, val_set, cfg, ranks, drop_last)
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(cfg.seed),
        **worker_settings(cfg.num_workers),
    )
    return train_loader, DataLoader(val_set, batch_size=cfg.batch_size)


def sharded_loaders(
    train_set: PatchDataset, val_set: PatchDataset, cfg: TrainConfig, ranks: Ranks, drop_last: bool
) -> tuple[DataLoader, DataLoader]:
    """This rank's loaders: `train.batch_size` stays the global batch, each rank taking an equal part.

    Train: a DistributedSampler seeded by `train.seed`, reshuffled by `fit` each epoch (`set_epoch`),
    so every rank takes as many batches as the others. Val: the single process's batches, dealt out
    whole and never padded with repeats, so that summed over the ranks its loss and pixel counts are
    those of one process (the Dice term of the loss pools each batch: the batches must be the same).
    """
    sampler = DistributedSampler(
        train_set, ranks.world_size, ranks.rank, shuffle=True, seed=cfg.seed, drop_last=drop_last
    )
    train_loader = DataLoader(
        train_set,
        batch_size=ranks.batch_share(cfg.batch_size),
        sampler=sampler,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(cfg.seed),  # seeds loader workers only; kept as one process's
        **worker_settings(cfg.num_workers),
    )
    val_batches = list(BatchSampler(SequentialSampler(val_set), cfg.batch_size, drop_last=False))
    return train_loader, DataLoader(val_set, batch_sampler=val_batches[ranks.rank :: ranks.world_size])


def worker_settings(num_workers: int) -> dict:
    """DataLoader arguments for `num_workers` (train.num_workers) worker processes, no more than this
    process has CPUs (said in one line when that lowers it), each killed if this process dies."""
    cpus = worker_count()
    if num_workers > cpus:
        log.info(f"train: train.num_workers {num_workers} is more than the {cpus} CPUs here: using {cpus} workers")
        num_workers = cpus
    return {"num_workers": num_workers, "worker_init_fn": loader_worker_init() if num_workers else None}
