import dataclasses
import itertools

import pytest
import torch
from conftest import REPO_ROOT

from patchunet.core.config import TrainConfig, load_params, parse_section
from patchunet.training.schedules import PlateauSchedule, WarmupCosineSchedule, make_schedule

COSINE = dataclasses.replace(
    parse_section(TrainConfig, load_params(REPO_ROOT / "params.yaml"), "train"),
    schedule="cosine",
    lr=0.01,
    min_lr=1e-4,
    warmup_epochs=2,
    epochs=5,
    max_minutes=None,
)
STEPS_PER_EPOCH = 3


def optimizer(lr: float = COSINE.lr) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def rates_per_batch(schedule: WarmupCosineSchedule, batches: int) -> list[float]:
    """The rate each of `batches` optimiser steps runs at, then the rate after the last."""
    rates = []
    for _ in range(batches):
        rates.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.after_batch()
    return [*rates, schedule.optimizer.param_groups[0]["lr"]]


def test_cosine_warms_up_linearly_to_the_learning_rate() -> None:
    warmup = COSINE.warmup_epochs * STEPS_PER_EPOCH
    rates = rates_per_batch(WarmupCosineSchedule(optimizer(), COSINE, STEPS_PER_EPOCH), warmup)
    assert rates[:warmup] == pytest.approx([COSINE.lr * (n + 1) / warmup for n in range(warmup)], rel=1e-12)
    assert rates[0] == pytest.approx(COSINE.lr / warmup, rel=1e-12)
    assert rates[warmup - 1] == COSINE.lr and rates[warmup] == COSINE.lr


def test_cosine_decreases_monotonically_to_min_lr_exactly_at_the_planned_end() -> None:
    warmup, total = COSINE.warmup_epochs * STEPS_PER_EPOCH, COSINE.epochs * STEPS_PER_EPOCH
    rates = rates_per_batch(WarmupCosineSchedule(optimizer(), COSINE, STEPS_PER_EPOCH), total)
    decay = rates[warmup:]
    assert all(later < earlier for earlier, later in itertools.pairwise(decay))
    assert rates[total - 1] > COSINE.min_lr
    assert rates[total] == COSINE.min_lr


@pytest.mark.parametrize(
    ("first_epoch_seconds", "planned"),
    [(7.0, 8), (6.0, 10), (5.0, 10), (59.0, 1), (120.0, 1)],  # floor(60 / s), capped by epochs, at least 1
)
def test_max_minutes_plans_the_epochs_that_fit_after_the_first(first_epoch_seconds: float, planned: int) -> None:
    cfg = dataclasses.replace(COSINE, epochs=10, max_minutes=1.0)
    schedule = WarmupCosineSchedule(optimizer(), cfg, STEPS_PER_EPOCH)
    assert schedule.planned_epochs == cfg.epochs
    rates_per_batch(schedule, STEPS_PER_EPOCH)
    schedule.after_epoch(val_loss=1.0, epoch_seconds=first_epoch_seconds)
    assert schedule.planned_epochs == planned
    rates_per_batch(schedule, STEPS_PER_EPOCH)
    schedule.after_epoch(val_loss=1.0, epoch_seconds=0.001)  # later epochs leave the plan alone
    assert schedule.planned_epochs == planned


def test_a_replanned_cosine_reaches_min_lr_at_the_end_of_the_new_plan() -> None:
    cfg = dataclasses.replace(COSINE, epochs=20, warmup_epochs=1, max_minutes=1.0)
    schedule = WarmupCosineSchedule(optimizer(), cfg, STEPS_PER_EPOCH)
    rates_per_batch(schedule, STEPS_PER_EPOCH)
    schedule.after_epoch(val_loss=1.0, epoch_seconds=15.0)  # 4 epochs fit
    rates = rates_per_batch(schedule, 3 * STEPS_PER_EPOCH)
    assert rates[-2] > cfg.min_lr and rates[-1] == cfg.min_lr


def test_without_max_minutes_the_plan_is_the_epochs() -> None:
    schedule = WarmupCosineSchedule(optimizer(), COSINE, STEPS_PER_EPOCH)
    rates_per_batch(schedule, STEPS_PER_EPOCH)
    schedule.after_epoch(val_loss=1.0, epoch_seconds=1e6)
    assert schedule.planned_epochs == COSINE.epochs


def test_a_cosine_restored_from_its_state_runs_at_the_same_rates() -> None:
    cfg = dataclasses.replace(COSINE, epochs=10, max_minutes=1.0)
    original = WarmupCosineSchedule(optimizer(), cfg, STEPS_PER_EPOCH)
    rates_per_batch(original, STEPS_PER_EPOCH)
    original.after_epoch(val_loss=1.0, epoch_seconds=12.0)  # plans 5 epochs
    rates_per_batch(original, 4)
    state = original.state_dict()

    restored = WarmupCosineSchedule(optimizer(), cfg, STEPS_PER_EPOCH)
    restored.load_state_dict(state)
    assert restored.planned_epochs == 5
    assert restored.optimizer.param_groups[0]["lr"] == original.optimizer.param_groups[0]["lr"]
    assert rates_per_batch(restored, 8) == rates_per_batch(original, 8)


def test_plateau_schedule_steps_as_reduce_lr_on_plateau() -> None:
    cfg = dataclasses.replace(COSINE, schedule="plateau", lr_patience=1, lr_factor=0.5, min_lr=2e-3)
    schedule = PlateauSchedule(optimizer(), cfg)
    reference_optimizer = optimizer()
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        reference_optimizer, mode="min", factor=0.5, patience=1, min_lr=2e-3
    )
    rates, reference_rates = [], []
    for val_loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9]:
        schedule.after_batch()  # no per-batch change
        schedule.after_epoch(val_loss, epoch_seconds=1.0)
        reference.step(val_loss)
        rates.append(schedule.inner.optimizer.param_groups[0]["lr"])
        reference_rates.append(reference_optimizer.param_groups[0]["lr"])
    assert rates == reference_rates
    assert rates[0] == cfg.lr and rates[-1] == cfg.min_lr  # it did drop, to the floor
    assert schedule.planned_epochs == cfg.epochs


def test_a_restored_plateau_schedule_keeps_its_count_of_bad_epochs() -> None:
    cfg = dataclasses.replace(COSINE, schedule="plateau", lr_patience=2, lr_factor=0.5)
    original = PlateauSchedule(optimizer(), cfg)
    for val_loss in [1.0, 1.0, 1.0]:
        original.after_epoch(val_loss, epoch_seconds=1.0)
    restored = PlateauSchedule(optimizer(), cfg)
    restored.load_state_dict(original.state_dict())
    for schedule in (original, restored):
        schedule.after_epoch(1.0, epoch_seconds=1.0)
    assert restored.inner.optimizer.param_groups[0]["lr"] == original.inner.optimizer.param_groups[0]["lr"]
    assert original.inner.optimizer.param_groups[0]["lr"] == cfg.lr * 0.5


@pytest.mark.parametrize(("name", "kind"), [("cosine", WarmupCosineSchedule), ("plateau", PlateauSchedule)])
def test_make_schedule_builds_the_schedule_train_schedule_names(name: str, kind: type) -> None:
    assert isinstance(make_schedule(optimizer(), dataclasses.replace(COSINE, schedule=name), STEPS_PER_EPOCH), kind)


def test_a_plan_no_longer_than_the_warm_up_still_ends_at_min_lr() -> None:
    cfg = dataclasses.replace(COSINE, epochs=1, warmup_epochs=3)
    schedule = WarmupCosineSchedule(optimizer(), cfg, STEPS_PER_EPOCH)
    assert rates_per_batch(schedule, STEPS_PER_EPOCH)[-1] == pytest.approx(cfg.min_lr)
