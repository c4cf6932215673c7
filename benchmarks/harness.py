"""What the ablation, seeds and score-decomposition scripts share: train one network on the
pipeline's patch sets (or, for other patch or augment settings, sets cut in memory by the patches
stage's reader), predict whole images to choose post-processing on val; the scripts score the test
images with the evaluate stage's own loop (patchunet.stages.evaluate).

Run from the repository root after `dvc repro patches` (the scripts import it as `benchmarks.harness`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import ROOT
from patchunet.core.config import (
    AugmentConfig,
    EvalConfig,
    InstanceHead,
    ModelConfig,
    PatchConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from patchunet.core.paths import PATCH_DIR, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.data.patches import PatchSet
from patchunet.data.split import read_split
from patchunet.inference.sliding_window import image_maps
from patchunet.model.unet import PatchUNet
from patchunet.stages.evaluate import held_out_images, read_eval_image
from patchunet.stages.patches import labelled_images
from patchunet.training.builder import build_training, make_datasets, make_loaders
from patchunet.training.checkpoints import BEST_CHECKPOINT, load_checkpoint
from patchunet.training.devices import pick_device
from patchunet.training.loop import EpochCallback, EpochResult, FitResult, fit
from patchunet.training.val_scoring import WholeImageAJI
from patchunet.tuning.space import apply_overrides


@dataclasses.dataclass
class Settings:
    """The params.yaml sections a benchmark run reads."""

    train: TrainConfig
    augment: AugmentConfig
    eval: EvalConfig
    patch: PatchConfig
    model: ModelConfig
    train_images: int | None = None
    """Train on this many of the split's train images only (`fewer_images`); None: all of them."""

    @classmethod
    def load(cls, path: Path = ROOT / "params.yaml", overrides: dict[str, Any] | None = None) -> Settings:
        """The sections of `path`, with `overrides` ({"section.key": value}, as `tune.space` keys:
        a patch.size alone also sets patch.stride to it) put in first."""
        params = load_params(path)
        if overrides:
            params = apply_overrides(params, overrides)
        sections = {
            "train": TrainConfig,
            "augment": AugmentConfig,
            "eval": EvalConfig,
            "patch": PatchConfig,
            "model": ModelConfig,
        }
        return cls(**{name: parse_section(kind, params, name) for name, kind in sections.items()})

    @property
    def window(self) -> int:
        """The sliding window of whole-image predictions: eval.window, or else patch.size."""
        return self.eval.window_for(self.patch.size, self.model.size_multiple)


_built: dict[tuple, tuple[PatchSet, PatchSet]] = {}
"""The last patch sets cut in memory, by (patch, augment) settings (one entry: they are large)."""


def patch_sets(settings: Settings) -> tuple[PatchSet, PatchSet]:
    """Train and val patch sets for `settings` (the train set cut to `settings.train_images`)."""
    train, val = _patch_sets(settings)
    return (train if settings.train_images is None else fewer_images(train, settings.train_images)), val


def fewer_images(patches: PatchSet, count: int) -> PatchSet:
    """The patches of `count` of the set's images: sorted by id, every fourth dropped first, then
    from the end (18 of 24 keeps 3 in 4, spread over the TCGA sites as the split spreads them)."""
    ids = sorted({str(row["image_id"]) for row in patches.index})
    if not 0 < count <= len(ids):
        sys.exit(f"harness: cannot keep {count} of {len(ids)} train images")
    kept = [i for n, i in enumerate(ids) if n % 4 != 3] + [i for n, i in enumerate(ids) if n % 4 == 3]
    keep = set(kept[:count])
    rows = [n for n, row in enumerate(patches.index) if row["image_id"] in keep]
    index = [{**patches.index[n], "patch": number} for number, n in enumerate(rows)]
    return PatchSet(patches.images[rows], patches.labels[rows], index)


def _patch_sets(settings: Settings) -> tuple[PatchSet, PatchSet]:
    """The pipeline's patch sets (data/processed/patches) where the patch and augment sections are
    params.yaml's and the saved sets have that patch size; else cut in memory from the split's
    images by the patches stage's own reader (patchunet.stages.patches)."""
    pipeline = Settings.load()
    if settings.patch == pipeline.patch and settings.augment == pipeline.augment:
        stores = PatchSet.load(ROOT / PATCH_DIR / "train"), PatchSet.load(ROOT / PATCH_DIR / "val")
        if stores[0].images.shape[1] == settings.patch.size:
            return stores
    key = (repr(settings.patch), repr(settings.augment))
    if key not in _built:
        _built.clear()
        split = read_split(ROOT / SPLIT_FILE)
        size, stride = settings.patch.size, settings.patch.stride
        print(f"harness: cutting {size} px patches every {stride} px in memory", flush=True)
        _built[key] = tuple(  # type: ignore[assignment]
            PatchSet.from_images(labelled_images(ROOT, split[side], size, augment, side), size, stride)
            for side, augment in (("train", settings.augment), ("val", None))
        )
    return _built[key]


def _report(label: str) -> EpochCallback:
    def report(result: EpochResult) -> None:
        aji = f"  val aji {result.val_aji:.4f}" if result.val_aji is not None else ""
        print(
            f"{label}: epoch {result.epoch + 1}  train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
            f"val dice {result.val_dice:.4f}{aji}  {result.seconds:.0f} s{'  best' if result.is_best else ''}",
            flush=True,
        )

    return report


def _fit(
    network: torch.nn.Module,
    train_loader: torch.utils.data.DataLoader,
    val_loader: torch.utils.data.DataLoader,
    val_patches: PatchSet,
    settings: Settings,
    checkpoint_dir: Path,
    callbacks: list[EpochCallback],
) -> tuple[FitResult, float]:
    """`fit` as the train stage calls it (a WholeImageAJI val scorer where train.select_by is
    val_aji); the best epoch's weights loaded; the fit and its seconds."""
    val_scorer = None
    if settings.train.select_by == "val_aji":
        val_scorer = WholeImageAJI(val_patches, settings.eval, settings.window)
    started = time.perf_counter()
    result = fit(
        network,
        train_loader,
        val_loader,
        settings.train,
        pick_device(),
        checkpoint_dir,
        callbacks=callbacks,
        val_scorer=val_scorer,
    )
    seconds = time.perf_counter() - started
    network.load_state_dict(load_checkpoint(checkpoint_dir / BEST_CHECKPOINT)["model"])
    return result, seconds


def train_network(
    network: torch.nn.Module, head: InstanceHead, settings: Settings, checkpoint_dir: Path, label: str
) -> tuple[FitResult, float]:
    """Train `network` in place on `patch_sets(settings)` as the train stage does; load its
    best epoch; return the fit and the training seconds. One line per epoch."""
    train_patches, val_patches = patch_sets(settings)
    datasets = make_datasets(head, settings.train, settings.augment, train_patches, val_patches)
    train_loader, val_loader = make_loaders(*datasets, settings.train)
    return _fit(network, train_loader, val_loader, val_patches, settings, checkpoint_dir, [_report(label)])


def train_patchunet(settings: Settings, checkpoint_dir: Path, label: str) -> tuple[PatchUNet, FitResult, float]:
    """A PatchUNet of `settings.model` built and trained by the train stage's own builder
    (`build_training`: initial weights from train.seed, loaders, per-epoch metrics to the active
    MLflow run) on `patch_sets(settings)`; its best epoch loaded; with the fit and training seconds."""
    train_patches, val_patches = patch_sets(settings)
    training = build_training(settings.model, settings.train, settings.augment, train_patches, val_patches)
    callbacks = [training.log_epoch, _report(label)]
    result, seconds = _fit(
        training.model, training.train_loader, training.val_loader, val_patches, settings, checkpoint_dir, callbacks
    )
    return training.model, result, seconds


@dataclasses.dataclass
class Prediction:
    image_id: str
    maps: np.ndarray
    truth: np.ndarray
    seconds: float


def val_images() -> list[tuple[str, Path, Path]]:
    """(id, image, labels) of the validation images of the split stage."""
    ids = read_split(ROOT / SPLIT_FILE)["val"]
    return [(i, ROOT / RAW_DIR / "train/images" / f"{i}.tif", ROOT / labels_dir("train") / f"{i}.tif") for i in ids]


def test_images() -> list[tuple[str, Path, Path]]:
    """(id, image, labels) of the official test images, as the evaluate stage lists them."""
    return held_out_images(ROOT)


def predict_images(
    network: torch.nn.Module, images: list[tuple[str, Path, Path]], settings: Settings, desc: str
) -> list[Prediction]:
    """The network's maps of whole images (its `cfg.instance_head`'s), with the `eval` sliding-window values."""
    cfg = settings.eval
    window = settings.window
    network.eval().to(pick_device())
    predictions = []
    for image_id, image_path, label_path in tqdm(images, desc=desc, unit="image", leave=False):
        image, truth = read_eval_image(image_path, label_path)  # as the evaluate stage reads them
        started = time.perf_counter()
        maps = image_maps(network, image, cfg, window)
        predictions.append(Prediction(image_id, maps, truth, time.perf_counter() - started))
    return predictions


def parameter_count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
