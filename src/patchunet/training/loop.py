"""The training loop and its callbacks: early stopping, reduce-LR-on-plateau, checkpointing.

`fit` takes built objects (see `builder`) and a device, and neither chooses the device nor makes
the loaders: that is the caller's part. Under torchrun the caller also passes its `Ranks`
(`distributed`), and `fit` trains the DDP-wrapped model and sums each epoch's scores over the ranks,
so every rank takes the same decisions; only rank 0 writes checkpoints. Nothing here prints or
touches MLflow: callers pass `callbacks` (logging, pruning) and `progress` (a bar), so the same
loop serves `dvc repro train`, each tuning trial, the benchmarks and the tests.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from patchunet.core.config import InstanceHead, TrainConfig
from patchunet.core.errors import PatchUNetError
from patchunet.data.dataset import as_model_input
from patchunet.evaluation.metrics import PixelCounts
from patchunet.model.heads import head_loss
from patchunet.training.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    PROCESSES_KEY,
    RANK_RNG_KEY,
    check_processes,
    load_checkpoint,
    save_checkpoint,
    set_aside_checkpoints,
)
from patchunet.training.devices import Precision, autocast, training_precision
from patchunet.training.distributed import Ranks
from patchunet.training.schedules import Schedule, make_schedule

VAL_THRESHOLD = 0.5
"""Probability above which a pixel counts as nucleus for the val Dice and IoU of each epoch.

Fixed on purpose, and not `eval.threshold`: val Dice picks the best epoch (best.pt), and
`eval.threshold` is chosen on val *after* training, for whole-image post-processing. Tying the two
would make the choice of weights depend on a value tuned on those weights, and retrain on its change.
"""


DIVERGENCE_FACTOR = 10
"""An epoch whose train or val loss is above this many times the untrained network's val loss has
diverged, and so has one whose loss is not finite: training ends there (`LossDiverged`).

The untrained network predicts next to nothing, so its loss is about the loss of knowing nothing
(BCE ~ ln 2 per pixel, soft Dice ~ 1 - the foreground share, the head's terms alike): learning only
lowers it. A network 10 times worse than knowing nothing has left the region where gradient steps
improve it (too high a `train.lr`, typically) and does not come back; a healthy run's noisiest epoch
stays well within 10 times. The reference is measured, not a formula of the loss weights and heads.
"""
SCHEDULE_KEY = "schedule"
"""train.schedule in a checkpoint: a resume under another schedule is refused, not silently mixed."""
INITIAL_LOSS_KEY = "initial_val_loss"
"""The untrained network's val loss in a checkpoint, so that a resumed run judges divergence alike."""


class LossDiverged(PatchUNetError):
    """Training diverged: its losses are not finite, or DIVERGENCE_FACTOR times the untrained network's."""


@dataclasses.dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_dice: float
    val_iou: float
    lr: float
    seconds: float
    val_aji: float | None = None
    """Per-image mean AJI of the whole val images, where `fit` was given a `val_scorer`."""
    is_best: bool = False
    """Whether this epoch's weights are the best so far by `train.select_by` (best.pt)."""

    def selection_score(self, select_by: str) -> float:
        """The score `train.select_by` names: higher is better."""
        if select_by == "last":
            return self.epoch
        score = self.val_aji if select_by == "val_aji" else self.val_dice
        if score is None:
            raise ValueError(f"epoch {self.epoch} has no {select_by}: `fit` needs a val_scorer to select by it")
        return score


EpochCallback = Callable[[EpochResult], None]
ValScorer = Callable[[torch.nn.Module], float]
"""Scores the model (in eval mode, under the training's autocast) on the whole val images: val AJI."""


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
        return self.stopped

    @property
    def stopped(self) -> bool:
        return self.bad_epochs >= self.patience


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "val_aji", "lr")


@dataclasses.dataclass
class FitResult:
    history: list[EpochResult]
    best_epoch: int
    stopped_early: bool
    precision: Precision = "fp32"
    """What the run computed in: train.precision, or fp32 where bf16 is not native."""
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
            **({"val_aji": best.val_aji} if best.val_aji is not None else {}),
            "val_loss": best.val_loss,
            "train_loss": best.train_loss,
        }

    def history_rows(self) -> list[dict[str, float | int]]:
        """One row per epoch with `history_columns`, for plots/train.csv."""
        return [{k: getattr(r, k) for k in self.history_columns} for r in self.history]

    @property
    def history_columns(self) -> tuple[str, ...]:
        """HISTORY_COLUMNS, less val_aji where no epoch was scored on whole images."""
        scored = any(r.val_aji is not None for r in self.history)
        return tuple(c for c in HISTORY_COLUMNS if scored or c != "val_aji")


@dataclasses.dataclass
class LoopState:
    """What a checkpoint must hold besides the weights for a resumed run to end as an unbroken one."""

    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    stopper: EarlyStopping
    shuffle: torch.Generator
    history: list[EpochResult] = dataclasses.field(default_factory=list)
    initial_loss: float | None = None
    """The untrained network's val loss (None when resumed from a checkpoint that predates it)."""

    @classmethod
    def start(
        cls, model: torch.nn.Module, cfg: TrainConfig, shuffle: torch.Generator, steps_per_epoch: int
    ) -> LoopState:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scheduler = make_schedule(optimizer, cfg, steps_per_epoch)
        return cls(
            optimizer, scheduler, EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta), shuffle
        )

    def checkpoint(self, model: torch.nn.Module, epoch: int, extra_state: dict | None, ranks: Ranks) -> dict:
        """The state to save (`model` unwrapped, so its keys are those of one process), on every rank:
        under DDP it gathers each rank's RNG state, so every rank must call it."""
        rng = rng_state()
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            SCHEDULE_KEY: self.scheduler.kind,
            "early_stopping": dataclasses.asdict(self.stopper),
            "history": [dataclasses.asdict(r) for r in self.history],
            "rng": {"torch": rng["torch"], "shuffle": self.shuffle.get_state(), "cuda": rng["cuda"]},
            INITIAL_LOSS_KEY: self.initial_loss,
            **(extra_state or {}),
        }
        if ranks.world_size > 1:  # a single process's checkpoint stays as it was before DDP
            state |= {PROCESSES_KEY: ranks.world_size, RANK_RNG_KEY: ranks.gather(rng)}
        return state

    def restore(self, model: torch.nn.Module, state: dict, ranks: Ranks, select_by: str) -> None:
        saved = state.get(SCHEDULE_KEY, "plateau")  # checkpoints older than the cosine schedule were plateau's
        if saved != self.scheduler.kind:
            raise PatchUNetError(
                f"train.schedule: the checkpoint to resume trained with {saved}, not {self.scheduler.kind}; "
                "set it back, or start a fresh run"
            )
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stopper.best, self.stopper.bad_epochs = (
            state["early_stopping"]["best"],
            state["early_stopping"]["bad_epochs"],
        )
        self.history = mark_best([EpochResult(**row) for row in state["history"]], select_by)
        self.scheduler.load_state_dict(state["scheduler"])  # after the optimiser: a cosine sets its rate
        self.initial_loss = state.get(INITIAL_LOSS_KEY)
        self.shuffle.set_state(state["rng"]["shuffle"])
        set_rng_state(state[RANK_RNG_KEY][ranks.rank] if ranks.world_size > 1 else state["rng"])


def mark_best(history: list[EpochResult], select_by: str) -> list[EpochResult]:
    """`history` with `is_best` set by a running maximum of `select_by`, where a checkpoint written
    before `is_best` existed left it unset; a resume by val_aji needs every epoch's val_aji."""
    if any(r.is_best for r in history) or not history:
        return history
    if select_by == "val_aji" and any(r.val_aji is None for r in history):
        raise PatchUNetError("train.select_by: the checkpoint to resume has no val_aji; resume by val_dice")
    best, marked = -math.inf, []
    for r in history:
        score = r.selection_score(select_by)
        marked.append(dataclasses.replace(r, is_best=score > best))
        best = max(best, score)
    return marked


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    model: torch.nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    checkpoint_dir: Path,
    *,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
    progress: Callable[[Iterable, int, str], Iterable] | None = None,
    extra_state: dict | None = None,
    ranks: Ranks | None = None,
    val_scorer: ValScorer | None = None,
) -> FitResult:
    """Train `model` on `device` in place; leaves `best.pt` (by `cfg.select_by`) and `last.pt` in
    `checkpoint_dir`.

    `train_loader` shuffles with its own seeded generator (`builder.make_loaders`), whose state the
    checkpoints keep. Stops after `cfg.epochs` (or the epochs a cosine schedule planned for
    `cfg.max_minutes`), on early stopping, or before an epoch that would end past `cfg.max_minutes`
    of training (judged by the longest epoch so far).

    Computes in `cfg.precision` (bf16 autocast where native, see `devices.training_precision`),
    with the losses in fp32, and in channels_last layout given `cfg.channels_last`.

    `resume` continues from `last.pt` exactly: weights, optimiser, schedule, early stopping,
    history and RNG state. Without it, checkpoints already there are set aside, never deleted.
    `callbacks` run after each epoch's checkpoints are written, in order.
    `extra_state` (plain values only) is stored in every checkpoint (e.g. the MLflow run id).
    `progress(batches, total, description)` may wrap each epoch's batches, e.g. in a tqdm bar.
    `val_scorer` scores each epoch on the whole val images (its `val_aji`); `cfg.select_by`
    val_aji needs it (on rank 0 alone under DDP).

    A fresh run first measures the untrained network's val loss; an epoch whose losses are not
    finite or DIVERGENCE_FACTOR times that raises `LossDiverged` before its checkpoints and callbacks.

    `ranks` (from `distributed.process_group`, on `device`) makes this one of several DDP processes
    over loaders sharded by `builder.make_loaders`: every rank must call `fit` alike, and each
    epoch's scores, and so every decision, are the same on all of them. Only rank 0 sets
    checkpoints aside and writes new ones; pass `callbacks`, `progress` and `val_scorer` there alone.
    """
    ranks = ranks or Ranks(device)
    if cfg.select_by == "val_aji" and val_scorer is None and ranks.is_main:
        raise ValueError("train.select_by val_aji needs a val_scorer (the whole val images)")
    precision = training_precision(cfg.precision, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    previous = None if resume or not ranks.is_main else set_aside_checkpoints(checkpoint_dir)
    loop = LoopState.start(model, cfg, train_loader.generator, len(train_loader))
    torch.manual_seed(cfg.seed + ranks.rank)  # ranks draw different dropout masks
    if resume:
        state = load_checkpoint(checkpoint_dir / LAST_CHECKPOINT)
        check_processes(checkpoint_dir / LAST_CHECKPOINT, state, ranks.world_size)
        loop.restore(model, state, ranks, cfg.select_by)
    else:
        loop.initial_loss = untrained_loss(model, val_loader, cfg, device, ranks, precision)
    trained = ranks.wrap(model)
    wrap = progress or (lambda batches, total, description: batches)
    step = Step(cfg, device, precision, train_loader.dataset.head, loop.scheduler)

    for epoch in range(len(loop.history), cfg.epochs):
        if loop.stopper.stopped or epoch >= loop.scheduler.planned_epochs or out_of_time(loop.history, cfg.max_minutes):
            break
        started = time.perf_counter()
        lr = loop.optimizer.param_groups[0]["lr"]  # the rate this epoch starts at
        train_loader.dataset.set_epoch(epoch)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        batches = wrap(train_loader, len(train_loader), f"epoch {epoch + 1}")
        train_loss = train_one_epoch(trained, batches, loop.optimizer, step, ranks)
        ranks.share_buffers(model)
        val_loss, counts = evaluate(model, val_loader, step, ranks)
        val_aji = ranks.from_main(score_whole_images(model, val_scorer, step) if val_scorer else None)
        seconds = ranks.from_main(time.perf_counter() - started)  # so that max_minutes stops every rank alike
        loop.scheduler.after_epoch(val_loss, seconds)
        if not cfg.refit:  # a refit's val images train too: their loss may not stop it
            loop.stopper.step(val_loss)
        result = EpochResult(epoch, train_loss, val_loss, counts.dice, counts.iou, lr, seconds, val_aji)
        check_convergence(result, loop.initial_loss, cfg)
        is_best = not loop.history or result.selection_score(cfg.select_by) > max(
            r.selection_score(cfg.select_by) for r in loop.history
        )
        result = dataclasses.replace(result, is_best=is_best)
        loop.history.append(result)
        state = loop.checkpoint(model, epoch, extra_state, ranks)
        if ranks.is_main:
            save_checkpoint(state, checkpoint_dir / LAST_CHECKPOINT)
            if result.is_best:
                save_checkpoint(state, checkpoint_dir / BEST_CHECKPOINT)
        for callback in callbacks:
            callback(result)

    ranks.barrier()  # rank 0 has written the last checkpoint before any rank goes on (to a resume, say)
    best_epoch = next(r for r in reversed(loop.history) if r.is_best).epoch
    return FitResult(loop.history, best_epoch, loop.stopper.stopped, previous_checkpoints=previous, precision=precision)


@dataclasses.dataclass(frozen=True)
class Step:
    """How each batch is computed: device, precision, layout, loss and the schedule to step."""

    cfg: TrainConfig
    device: torch.device
    precision: Precision
    head: InstanceHead = "none"
    scheduler: Schedule | None = None

    def batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader's (uint8 images, targets) on the device: images as float model input."""
        images = as_model_input(images.to(self.device, non_blocking=True))
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(self.device, non_blocking=True)

    def logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's logits, computed under the run's autocast and returned in fp32."""
        with autocast(self.device, self.precision):
            return model(images).float()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return training_loss(logits, targets, self.cfg, self.head)


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    step: Step,
    ranks: Ranks | None = None,
) -> float:
    """One pass over the training batches; returns the mean loss per patch (of every rank's patches)."""
    model.train()
    total, seen = 0.0, 0
    for images, targets in batches:
        images, targets = step.batch(images, targets)
        optimizer.zero_grad(set_to_none=True)
        loss = step.loss(step.logits(model, images), targets)
        loss.backward()
        optimizer.step()
        if step.scheduler is not None:
            step.scheduler.after_batch()
        total += loss.item() * len(images)
        seen += len(images)
    if ranks is not None:
        total, seen = ranks.sum(total, seen)
    return total / seen


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, step: Step, ranks: Ranks | None = None
) -> tuple[float, PixelCounts]:
    """Mean loss per patch, and foreground pixel counts at VAL_THRESHOLD pooled over every val patch
    (over every rank's share of them, given `ranks`)."""
    model.eval()
    counts = PixelCounts()
    total, seen = 0.0, 0
    for images, targets in loader:
        images, targets = step.batch(images, targets)
        logits = step.logits(model, images)
        loss = step.loss(logits, targets)
        total += loss.item() * len(images)
        seen += len(images)
        counts.add(torch.sigmoid(logits[:, :1]) > VAL_THRESHOLD, targets[:, :1] > 0.5)  # targets are 0 or 1
    if ranks is not None:
        total, seen, tp, fp, fn = ranks.sum(total, seen, counts.tp, counts.fp, counts.fn)
        counts = PixelCounts(int(tp), int(fp), int(fn))
    return total / seen, counts


def score_whole_images(model: torch.nn.Module, val_scorer: ValScorer, step: Step) -> float:
    """`val_scorer` on the model in eval mode, under the run's autocast, on a fork of the RNG (so
    that scoring changes no later dropout mask)."""
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.inference_mode(), autocast(step.device, step.precision):
        return val_scorer(model)


def training_loss(logits: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig, head: InstanceHead) -> torch.Tensor:
    return head_loss(
        logits,
        targets,
        head,
        bce_weight=cfg.bce_weight,
        dice_weight=cfg.dice_weight,
        head_weight=cfg.head_weight,
        contact_weight=cfg.contact_weight,
    )


def untrained_loss(
    model: torch.nn.Module,
    val_loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    ranks: Ranks,
    precision: Precision = "fp32",
) -> float:
    """The val loss of `model` before training: the reference `check_convergence` judges against.

    Measured on a fork of the global RNG: starting a loader draws its base seed from that RNG
    (when it has no generator of its own), and training must draw the dropout masks it would
    draw without this measurement, so that the trained weights stay the same."""
    with torch.random.fork_rng(devices=[]):
        loss, _ = evaluate(model, val_loader, Step(cfg, device, precision, val_loader.dataset.head), ranks)
    return loss


def check_convergence(epoch: EpochResult, initial_loss: float | None, cfg: TrainConfig) -> None:
    """Raise LossDiverged when the epoch's losses are not finite, or above DIVERGENCE_FACTOR times
    `initial_loss` (the untrained network's val loss; None: judge finiteness alone)."""
    worst = max(epoch.train_loss, epoch.val_loss)
    if all(map(math.isfinite, (epoch.train_loss, epoch.val_loss))):
        if initial_loss is None or worst <= DIVERGENCE_FACTOR * initial_loss:
            return
        why = f"over {DIVERGENCE_FACTOR}x the untrained network's val loss {initial_loss:.3g}"
    else:
        why = "not finite"
    raise LossDiverged(
        f"training diverged at epoch {epoch.epoch} (counting from 0): train loss {epoch.train_loss:.3g}, "
        f"val loss {epoch.val_loss:.3g}, {why}; train.lr {cfg.lr:g} is likely too high"
    )


def out_of_time(history: list[EpochResult], max_minutes: float | None) -> bool:
    """True when another epoch as long as the longest so far would end past `max_minutes`."""
    if max_minutes is None or not history:
        return False
    spent = sum(r.seconds for r in history)
    return spent + max(r.seconds for r in history) > 60 * max_minutes
