"""The training loop and its callbacks: early stopping, reduce-LR-on-plateau, checkpointing.

Nothing here prints or touches MLflow: the caller passes `progress` (for a bar) and
`on_epoch_end` (for logging), so the same loop serves `dvc repro train`, the tuner and tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from patchunet.config import InstanceHead, TrainConfig
from patchunet.data import PatchDataset
from patchunet.errors import PatchUNetError
from patchunet.heads import head_loss
from patchunet.io import atomic_file
from patchunet.metrics import PixelCounts
from patchunet.model import load_tensor_file
from patchunet.resources import worker_count

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
PREVIOUS_PREFIX = "previous-"
"""Folders of an earlier run's checkpoints, set aside by a fresh run: previous-<time of its last.pt>."""
THRESHOLD = 0.5
"""Probability above which a pixel counts as nucleus for val Dice and IoU."""


@dataclasses.dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_dice: float
    val_iou: float
    lr: float
    seconds: float


@dataclasses.dataclass
class EarlyStopping:
    """Stop once val loss has not improved by `min_delta` for `patience` epochs in a row."""

    patience: int
    min_delta: float
    best: float = float("inf")
    bad_epochs: int = 0

    def step(self, val_loss: float) -> bool:
        """Record one epoch's val loss; True when training should stop."""
        if val_loss < self.best - self.min_delta:
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr")


@dataclasses.dataclass
class FitResult:
    history: list[EpochResult]
    best_epoch: int
    stopped_early: bool
    previous_checkpoints: Path | None = None
    """Where a fresh run moved the checkpoints it found (`set_aside_checkpoints`), if any."""

    @property
    def best(self) -> EpochResult:
        return next(r for r in self.history if r.epoch == self.best_epoch)

    def summary(self) -> dict[str, float | int | bool]:
        """The best epoch's scores and how the run ended (epochs count from 0, as MLflow steps)."""
        best = self.best
        return {
            "best_epoch": best.epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "val_dice": best.val_dice,
            "val_iou": best.val_iou,
            "val_loss": best.val_loss,
            "train_loss": best.train_loss,
        }

    def history_rows(self) -> list[dict[str, float | int]]:
        """One row per epoch with HISTORY_COLUMNS, for plots/train.csv."""
        return [{k: getattr(r, k) for k in HISTORY_COLUMNS} for r in self.history]


def pick_device() -> torch.device:
    """CUDA where present, else the CPU with one thread per available core."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(worker_count())
    return torch.device("cpu")


def fit(
    model: torch.nn.Module,
    train_set: PatchDataset,
    val_set: PatchDataset,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume: bool = False,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
    progress: Callable[[Iterable, int, str], Iterable] | None = None,
    extra_state: dict | None = None,
) -> FitResult:
    """Train `model` in place; leaves `best.pt` (by val Dice) and `last.pt` in `checkpoint_dir`.

    Stops after `cfg.epochs`, on early stopping, or before an epoch that would end past
    `cfg.max_minutes` of training (judged by the longest epoch so far).

    `resume` continues from `last.pt` exactly: weights, optimiser, scheduler, early stopping,
    history and RNG state. Without it, checkpoints already there are set aside, never deleted.
    `extra_state` (plain values only) is stored in every checkpoint (e.g. the MLflow run id).
    `progress(batches, total, description)` may wrap each epoch's batches, e.g. in a tqdm bar.
    """
    device = pick_device()
    model.to(device)
    previous = None if resume else set_aside_checkpoints(checkpoint_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
    )
    stopper = EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    history: list[EpochResult] = []
    if resume:
        state = load_checkpoint(checkpoint_dir / LAST_CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.best, stopper.bad_epochs = state["early_stopping"]["best"], state["early_stopping"]["bad_epochs"]
        history = [EpochResult(**row) for row in state["history"]]
        torch.set_rng_state(state["rng"]["torch"])
        shuffle.set_state(state["rng"]["shuffle"])
        if torch.cuda.is_available() and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    wrap = progress or (lambda batches, total, description: batches)
    stopped = stopper.bad_epochs >= stopper.patience

    for epoch in range(len(history), cfg.epochs):
        if stopped or out_of_time(history, cfg.max_minutes):
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains at
        train_set.set_epoch(epoch)
        # drop_last: a final batch of one patch would break BatchNorm at a 1x1 bottleneck
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(train_set) > cfg.batch_size,
            generator=shuffle,
            num_workers=cfg.num_workers,
        )
        train_loss = train_one_epoch(
            model, wrap(loader, len(loader), f"epoch {epoch + 1}"), optimizer, cfg, device, train_set.head
        )
        val_loss, counts = evaluate(model, DataLoader(val_set, batch_size=cfg.batch_size), cfg, device, val_set.head)
        scheduler.step(val_loss)
        stopped = stopper.step(val_loss)
        result = EpochResult(epoch, train_loss, val_loss, counts.dice, counts.iou, lr, time.perf_counter() - started)
        is_best = not history or result.val_dice > max(r.val_dice for r in history)
        history.append(result)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "early_stopping": dataclasses.asdict(stopper),
            "history": [dataclasses.asdict(r) for r in history],
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": shuffle.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            **(extra_state or {}),
        }
        save_checkpoint(state, checkpoint_dir / LAST_CHECKPOINT)
        if is_best:
            save_checkpoint(state, checkpoint_dir / BEST_CHECKPOINT)
        if on_epoch_end:
            on_epoch_end(result)

    best_epoch = max(history, key=lambda r: r.val_dice).epoch
    return FitResult(history, best_epoch, stopped, previous)


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
    head: InstanceHead = "none",
) -> float:
    """One pass over the training batches; returns the mean loss per patch."""
    model.train()
    total, seen = 0.0, 0
    for images, targets in batches:
        images, targets = images.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = training_loss(model(images), targets, cfg, head)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(images)
        seen += len(images)
    return total / seen


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device, head: InstanceHead = "none"
) -> tuple[float, PixelCounts]:
    """Mean loss per patch, and foreground pixel counts at THRESHOLD pooled over every val patch."""
    model.eval()
    counts = PixelCounts()
    total, seen = 0.0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        loss = training_loss(logits, targets, cfg, head)
        total += loss.item() * len(images)
        seen += len(images)
        counts.add(torch.sigmoid(logits[:, :1]) > THRESHOLD, targets[:, :1] > 0.5)
    return total / seen, counts


def training_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig, head: InstanceHead) -> torch.Tensor:
    return head_loss(
        logits, targets, head, bce_weight=cfg.bce_weight, dice_weight=cfg.dice_weight, head_weight=cfg.head_weight
    )


def out_of_time(history: list[EpochResult], max_minutes: float | None) -> bool:
    """True when another epoch as long as the longest so far would end past `max_minutes`."""
    if max_minutes is None or not history:
        return False
    spent = sum(r.seconds for r in history)
    return spent + max(r.seconds for r in history) > 60 * max_minutes


def save_checkpoint(state: dict, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of `fit`: tensors and plain values only, so loading it runs no code."""
    if not path.is_file():
        raise PatchUNetError(f"{path}: no checkpoint to resume from; train without --resume first")
    return load_tensor_file(path, "unreadable checkpoint")


def set_aside_checkpoints(checkpoint_dir: Path) -> Path | None:
    """Move `best.pt` and `last.pt` of an earlier run into a new `previous-<time>` folder beside them.

    A fresh run must never resume an earlier run's `last.pt` by mistake, nor throw away the
    training of a run that crashed. Returns the folder, or None when there was nothing to move.
    """
    found = [checkpoint_dir / name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT) if (checkpoint_dir / name).is_file()]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(found[0].stat().st_mtime))
    for attempt in itertools.count(1):
        folder = checkpoint_dir / (f"{PREVIOUS_PREFIX}{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        with contextlib.suppress(FileExistsError):  # never into an existing folder: it holds an earlier run
            folder.mkdir()
            break
    for path in found:
        path.rename(folder / path.name)
    return folder
