"""Learning-rate schedules: today's reduce-on-plateau, and a warm-up plus cosine sized by the budget.

`fit` calls `after_batch` after every optimiser step and `after_epoch` after every epoch, so both
schedules sit behind the same three calls, and both checkpoint their state for an exact resume.
"""

from __future__ import annotations

import math

import torch

from patchunet.core.config import TrainConfig


class PlateauSchedule:
    """ReduceLROnPlateau on val loss: the rate drops by `train.lr_factor` after `train.lr_patience`
    epochs without improvement, down to `train.min_lr`. Runs to `train.epochs`."""

    kind = "plateau"

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        self.planned_epochs = cfg.epochs

    def after_batch(self) -> None:
        pass

    def after_epoch(self, val_loss: float, epoch_seconds: float) -> None:
        self.inner.step(val_loss)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class WarmupCosineSchedule:
    """Linear warm-up to `train.lr` over `train.warmup_epochs`, then a cosine down to `train.min_lr`
    at the end of the planned epochs, stepped per batch.

    The plan is `train.epochs`; with `train.max_minutes`, the first epoch's length sizes it: as many
    epochs as fit in the budget, at most `train.epochs`. `fit` ends the run once the plan is done,
    so the rate reaches its floor near the end of the budget instead of being cut off mid-way (an
    epoch much longer than the first may still end the run one epoch early, near the floor).
    """

    kind = "cosine"

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.optimizer, self.cfg, self.steps_per_epoch = optimizer, cfg, max(steps_per_epoch, 1)
        self.planned_epochs = cfg.epochs
        self.step = 0
        self._apply()

    def rate(self, step: int) -> float:
        warmup = min(self.cfg.warmup_epochs, self.planned_epochs - 1) * self.steps_per_epoch  # a cosine follows
        if step < warmup:
            return self.cfg.lr * (step + 1) / warmup
        total = max(self.planned_epochs * self.steps_per_epoch - warmup, 1)
        progress = min((step - warmup) / total, 1.0)
        return self.cfg.min_lr + (self.cfg.lr - self.cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(self.step)

    def after_batch(self) -> None:
        self.step += 1
        self._apply()

    def after_epoch(self, val_loss: float, epoch_seconds: float) -> None:
        if self.step == self.steps_per_epoch and self.cfg.max_minutes is not None:
            fits = math.floor(60 * self.cfg.max_minutes / max(epoch_seconds, 1e-9))
            self.planned_epochs = max(1, min(self.cfg.epochs, fits))
            self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step, "planned_epochs": self.planned_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.planned_epochs = state["step"], state["planned_epochs"]
        self._apply()


Schedule = PlateauSchedule | WarmupCosineSchedule


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    if cfg.schedule == "cosine":
        return WarmupCosineSchedule(optimizer, cfg, steps_per_epoch)
    return PlateauSchedule(optimizer, cfg)
