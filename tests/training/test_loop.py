import dataclasses
import itertools
import math
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_ENGINE, disc_patches, write_code_running_file

import patchunet.training.loop
from patchunet.core.config import ModelConfig, TrainConfig, load_params, parse_section
from patchunet.core.errors import PatchUNetError
from patchunet.data.dataset import PatchDataset
from patchunet.model.unet import PatchUNet
from patchunet.training.builder import make_loaders
from patchunet.training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint
from patchunet.training.devices import native_bf16
from patchunet.training.loop import (
    DIVERGENCE_FACTOR,
    EarlyStopping,
    EpochResult,
    FitResult,
    LossDiverged,
    Step,
    check_convergence,
    fit,
    out_of_time,
)

TINY_MODEL = ModelConfig(
    base_channels=8, depth=2, norm="batch", dropout=0.1, instance_head="none", microns_per_pixel=0.25
)
TINY_TRAIN = dataclasses.replace(
    parse_section(TrainConfig, load_params(REPO_ROOT / "params.yaml"), "train"),
    epochs=2,
    batch_size=4,
    lr=0.01,
    num_workers=0,
    **TINY_ENGINE,
)


def datasets() -> tuple[PatchDataset, PatchDataset]:
    return PatchDataset(disc_patches(16, seed=1)), PatchDataset(disc_patches(8, seed=2))


def train(
    model: PatchUNet, train_set: PatchDataset, val_set: PatchDataset, cfg: TrainConfig, folder: Path, **kwargs
) -> FitResult:
    """`fit` on the CPU, with the loaders the builder makes."""
    return fit(model, *make_loaders(train_set, val_set, cfg), cfg, torch.device("cpu"), folder, **kwargs)


def tiny_model(seed: int = 0) -> PatchUNet:
    torch.manual_seed(seed)
    return PatchUNet(TINY_MODEL)


def test_early_stopping_stops_at_the_expected_epoch() -> None:
    stopper = EarlyStopping(patience=3, min_delta=0.01)
    scripted = [1.0, 0.9, 0.95, 0.895, 0.92, 0.5]
    stops = [stopper.step(loss) for loss in scripted]
    # 0.9 is the last real improvement; 0.895 is within min_delta, so epochs 2, 3, 4 are bad
    assert stops == [False, False, False, False, True, False]


def test_fit_stops_at_the_expected_epoch_on_a_scripted_val_loss(tmp_path: Path, monkeypatch) -> None:
    scripted = iter([1.0, 1.0, 0.9, 0.95, 0.895, 0.92, 0.5, 0.4])  # the untrained network's first
    real_evaluate = patchunet.training.loop.evaluate

    def scripted_evaluate(*args, **kwargs):
        _, counts = real_evaluate(*args, **kwargs)
        return next(scripted), counts

    monkeypatch.setattr(patchunet.training.loop, "evaluate", scripted_evaluate)
    cfg = dataclasses.replace(TINY_TRAIN, epochs=7, early_stopping_patience=3, early_stopping_min_delta=0.01)
    result = train(tiny_model(), *datasets(), cfg, tmp_path)
    assert result.stopped_early
    assert [r.val_loss for r in result.history] == [1.0, 0.9, 0.95, 0.895, 0.92]


def test_learning_rate_drops_on_a_plateau_and_is_logged_for_the_epoch_it_trained(tmp_path: Path, monkeypatch) -> None:
    real_evaluate = patchunet.training.loop.evaluate
    monkeypatch.setattr(patchunet.training.loop, "evaluate", lambda *a, **k: (1.0, real_evaluate(*a, **k)[1]))
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4, lr_patience=1, lr_factor=0.5, early_stopping_patience=10)
    result = train(tiny_model(), *datasets(), cfg, tmp_path)
    # epoch 0 sets the best; epochs 1 and 2 do not improve, so the rate halves after epoch 2
    assert [r.lr for r in result.history] == [0.01, 0.01, 0.01, 0.005]


def test_training_lowers_the_loss_and_leaves_checkpoints(tmp_path: Path) -> None:
    train_set, val_set = datasets()
    seen = []
    result = train(tiny_model(), train_set, val_set, TINY_TRAIN, tmp_path, callbacks=[seen.append])
    assert [r.epoch for r in seen] == [0, 1]
    assert result.history[1].train_loss < result.history[0].train_loss
    assert (tmp_path / BEST_CHECKPOINT).is_file() and (tmp_path / LAST_CHECKPOINT).is_file()
    state = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)  # plain data: loads without unpickling
    assert {"epoch", "model", "optimizer", "scheduler", "rng", "early_stopping"} <= set(state)


class Killed(Exception):
    pass


def kill_after_first_epoch(result) -> None:
    if result.epoch == 0:
        raise Killed


@pytest.mark.parametrize(("online_augment", "num_workers"), [(False, 0), (True, 0), (True, 1)])
def test_resumed_run_ends_with_the_same_weights(tmp_path: Path, online_augment: bool, num_workers: int) -> None:
    from patchunet.core.config import AugmentConfig
    from patchunet.data.augment import build_augmentation

    augment = AugmentConfig(
        copies=0, seed=0, rotate_limit=20, scale_limit=0.2, shift_limit=0.1, stain_jitter=0.1, stain_space="hestain"
    )

    def fresh_datasets():
        train, val = datasets()
        train.augmentation = build_augmentation(augment) if online_augment else None
        return train, val

    cfg = dataclasses.replace(TINY_TRAIN, num_workers=num_workers)
    straight = tiny_model()
    train(straight, *fresh_datasets(), cfg, tmp_path / "straight")

    with pytest.raises(Killed):
        train(tiny_model(), *fresh_datasets(), cfg, tmp_path / "killed", callbacks=[kill_after_first_epoch])
    resumed = tiny_model(seed=123)  # different initial weights: everything must come from the checkpoint
    result = train(resumed, *fresh_datasets(), cfg, tmp_path / "killed", resume=True)

    assert [r.epoch for r in result.history] == [0, 1]
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = write_code_running_file(tmp_path / LAST_CHECKPOINT, marker, key="optimizer")
    with pytest.raises(PatchUNetError, match=r"last\.pt: unreadable checkpoint: it holds Python objects") as error:
        load_checkpoint(evil)
    assert "\n" not in str(error.value)
    with pytest.raises(PatchUNetError):
        train(tiny_model(), *datasets(), TINY_TRAIN, tmp_path, resume=True)
    assert not marker.exists()


def test_a_fresh_run_sets_the_previous_runs_checkpoints_aside(tmp_path: Path) -> None:
    first = train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path)
    assert first.previous_checkpoints is None
    kept = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)["model"]

    second = train(tiny_model(seed=1), *datasets(), dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path)
    folder = second.previous_checkpoints
    assert folder is not None and folder.parent == tmp_path and folder.name.startswith("previous-")
    assert sorted(p.name for p in folder.iterdir()) == [BEST_CHECKPOINT, LAST_CHECKPOINT]
    moved = torch.load(folder / LAST_CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(kept[name], moved[name]) for name in kept)
    assert (tmp_path / LAST_CHECKPOINT).is_file()  # the new run's own


def test_the_time_budget_stops_before_an_epoch_that_would_end_past_it() -> None:
    def epochs(*seconds: float) -> list[EpochResult]:
        return [EpochResult(n, 1.0, 1.0, 0.5, 0.3, 1e-3, s) for n, s in enumerate(seconds)]

    assert not out_of_time([], 0.01)
    assert not out_of_time(epochs(50, 60), None)
    assert not out_of_time(epochs(50, 60), 3.0)  # 110 s spent, the next may take 60: 170 < 180
    assert out_of_time(epochs(50, 60, 40), 3.0)  # 150 + 60 > 180


def test_fit_with_a_time_budget_runs_one_epoch_and_says_it_stopped(tmp_path: Path) -> None:
    train_set, val_set = datasets()
    cfg = dataclasses.replace(TINY_TRAIN, epochs=5, max_minutes=1e-6)
    result = train(tiny_model(), train_set, val_set, cfg, tmp_path)
    assert len(result.history) == 1 and result.best_epoch == 0


@pytest.mark.parametrize("head", ["boundary", "distance", "hover"])
def test_fit_trains_each_instance_head(tmp_path: Path, head: str) -> None:
    train_set = PatchDataset(disc_patches(16, seed=1), head=head)
    val_set = PatchDataset(disc_patches(8, seed=2), head=head)
    torch.manual_seed(0)
    model = PatchUNet(dataclasses.replace(TINY_MODEL, instance_head=head))
    result = train(model, train_set, val_set, dataclasses.replace(TINY_TRAIN, epochs=3), tmp_path)
    assert result.history[-1].train_loss < result.history[0].train_loss
    from patchunet.model.heads import output_channels

    weights = load_checkpoint(tmp_path / BEST_CHECKPOINT)["model"]["head.weight"]
    assert weights.shape[0] == output_channels(head)


def test_a_learning_rate_that_explodes_the_loss_ends_training_before_its_checkpoints(tmp_path: Path) -> None:
    """train.lr 1e6 once trained to a loss of 7.6e10 and exited as a success."""
    seen = []
    with pytest.raises(LossDiverged, match=r"^training diverged at epoch 0 \(counting from 0\): train loss") as raised:
        train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, lr=1e6), tmp_path, callbacks=[seen.append])
    assert "train.lr 1e+06 is likely too high" in str(raised.value) and "\n" not in str(raised.value)
    assert seen == [] and not (tmp_path / LAST_CHECKPOINT).exists() and not (tmp_path / BEST_CHECKPOINT).exists()


@pytest.mark.parametrize(
    ("train_loss", "val_loss", "initial", "diverged"),
    [
        (float("nan"), 0.5, 1.0, True),
        (0.5, float("inf"), None, True),
        (DIVERGENCE_FACTOR * 1.0 + 0.1, 0.5, 1.0, True),
        (DIVERGENCE_FACTOR * 1.0, 0.5, 1.0, False),
        (1e6, 0.5, None, False),  # a checkpoint that predates the untrained loss: finiteness alone
        (1.3, 1.2, 1.0, False),  # a noisy early epoch
    ],
)
def test_divergence_is_a_non_finite_loss_or_one_ten_times_the_untrained_networks(
    train_loss: float, val_loss: float, initial: float | None, diverged: bool
) -> None:
    epoch = EpochResult(3, train_loss, val_loss, 0.5, 0.4, 1e-3, 1.0)
    if diverged:
        with pytest.raises(LossDiverged, match="training diverged at epoch 3"):
            check_convergence(epoch, initial, TINY_TRAIN)
    else:
        check_convergence(epoch, initial, TINY_TRAIN)


def test_a_resumed_run_judges_divergence_against_the_same_untrained_loss(tmp_path: Path) -> None:
    train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path)
    initial = load_checkpoint(tmp_path / LAST_CHECKPOINT)["initial_val_loss"]
    assert initial > 0
    train(tiny_model(), *datasets(), TINY_TRAIN, tmp_path, resume=True)
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["initial_val_loss"] == initial


def test_measuring_the_untrained_loss_leaves_the_trained_weights_unchanged(tmp_path: Path, monkeypatch) -> None:
    """Starting the val loader draws a seed from the global RNG: unforked, that shifted every
    dropout mask after it, and `dvc repro train` trained another model than before the check."""
    measured = train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path / "measured")
    monkeypatch.setattr(patchunet.training.loop, "untrained_loss", lambda *args: 1.0)
    unmeasured = train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, epochs=1), tmp_path / "unmeasured")
    assert [r.train_loss for r in measured.history] == [r.train_loss for r in unmeasured.history]
    for name, tensor in load_checkpoint(tmp_path / "measured" / LAST_CHECKPOINT)["model"].items():
        assert torch.equal(tensor, load_checkpoint(tmp_path / "unmeasured" / LAST_CHECKPOINT)["model"][name]), name


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has neither AMX nor AVX512-BF16")
def test_a_bf16_fit_runs_in_bf16_with_finite_losses(tmp_path: Path) -> None:
    result = train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, precision="bf16"), tmp_path)
    assert result.precision == "bf16"
    losses = [loss for r in result.history for loss in (r.train_loss, r.val_loss)]
    assert all(math.isfinite(loss) for loss in losses)
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_an_fp32_fit_says_fp32(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY_TRAIN, precision="fp32", epochs=1)
    assert train(tiny_model(), *datasets(), cfg, tmp_path).precision == "fp32"


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has neither AMX nor AVX512-BF16")
def test_step_logits_are_float32_from_a_bf16_forward_pass() -> None:
    model = tiny_model().eval()
    inner = []
    model.head.register_forward_hook(lambda module, inputs, output: inner.append(output.dtype))
    step = Step(dataclasses.replace(TINY_TRAIN, precision="bf16"), torch.device("cpu"), "bf16")
    with torch.inference_mode():
        logits = step.logits(model, torch.rand(2, 3, 32, 32))
    assert inner == [torch.bfloat16]  # computed under autocast
    assert logits.dtype == torch.float32


def test_a_channels_last_fit_trains_in_channels_last(tmp_path: Path) -> None:
    model = tiny_model()
    result = train(model, *datasets(), dataclasses.replace(TINY_TRAIN, channels_last=True), tmp_path)
    assert result.history[-1].train_loss < result.history[0].train_loss
    first_conv = model.encoders[0][0].weight  # (8, 3, 3, 3): the head's 1 x 1 kernel is both layouts at once
    assert first_conv.is_contiguous(memory_format=torch.channels_last) and not first_conv.is_contiguous()


def test_a_channels_last_best_checkpoint_loads_into_a_contiguous_model(tmp_path: Path) -> None:
    trained = tiny_model()
    cfg = dataclasses.replace(TINY_TRAIN, channels_last=True, precision="fp32", epochs=1)
    train(trained, *datasets(), cfg, tmp_path)
    fresh = tiny_model(seed=5)
    fresh.load_state_dict(load_checkpoint(tmp_path / BEST_CHECKPOINT)["model"])
    assert fresh.encoders[0][0].weight.is_contiguous()
    images = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        expected = trained.eval()(images.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(fresh.eval()(images), expected, rtol=1e-5, atol=1e-5)


def test_selecting_by_val_aji_keeps_the_epoch_with_the_best_scripted_aji(tmp_path: Path) -> None:
    scores = iter([0.1, 0.5, 0.3, 0.5])  # a tie keeps the earlier epoch
    model = tiny_model()
    weights = []
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4, select_by="val_aji", early_stopping_patience=10)
    result = train(
        model,
        *datasets(),
        cfg,
        tmp_path,
        val_scorer=lambda scored: next(scores),
        callbacks=[lambda r: weights.append({k: v.clone() for k, v in model.state_dict().items()})],
    )
    assert [r.val_aji for r in result.history] == [0.1, 0.5, 0.3, 0.5]
    assert [r.is_best for r in result.history] == [True, True, False, False]
    assert result.best_epoch == 1 and result.summary()["val_aji"] == 0.5
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert best["epoch"] == 1
    assert all(torch.equal(tensor, weights[1][name]) for name, tensor in best["model"].items())
    assert not all(torch.equal(tensor, weights[3][name]) for name, tensor in best["model"].items())


def test_selecting_by_val_aji_without_a_scorer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="select_by val_aji needs a val_scorer"):
        train(tiny_model(), *datasets(), dataclasses.replace(TINY_TRAIN, select_by="val_aji"), tmp_path)
    assert not (tmp_path / LAST_CHECKPOINT).exists()


def scripted_clock(first_epoch: float, later_epochs: float):
    """A perf_counter under which `fit`'s first epoch lasts `first_epoch` seconds and each later one
    `later_epochs` (fit reads it at the start and at the end of every epoch)."""
    ends = itertools.accumulate(itertools.chain([first_epoch], itertools.repeat(later_epochs)))
    ticks = itertools.chain([0.0], itertools.chain.from_iterable((end, end) for end in ends))
    return types.SimpleNamespace(perf_counter=lambda: next(ticks))


def test_a_cosine_fit_with_max_minutes_ends_at_the_planned_epochs_on_min_lr(tmp_path: Path, monkeypatch) -> None:
    # the first epoch takes 10 s of the 60: 6 planned, though later 1 s epochs would fit many more
    monkeypatch.setattr(patchunet.training.loop, "time", scripted_clock(10.0, 1.0))
    cfg = dataclasses.replace(
        TINY_TRAIN, schedule="cosine", warmup_epochs=1, epochs=50, max_minutes=1.0, early_stopping_patience=100
    )
    result = train(tiny_model(), *datasets(), cfg, tmp_path)
    assert [r.seconds for r in result.history] == [10.0] + [1.0] * 5
    assert not result.stopped_early
    state = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    assert state["scheduler"]["planned_epochs"] == len(result.history) == 6
    assert state["optimizer"]["param_groups"][0]["lr"] == cfg.min_lr


def test_a_resumed_cosine_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY_TRAIN, schedule="cosine", warmup_epochs=1, epochs=3)
    straight = tiny_model()
    train(straight, *datasets(), cfg, tmp_path / "straight")

    with pytest.raises(Killed):
        train(tiny_model(), *datasets(), cfg, tmp_path / "killed", callbacks=[kill_after_first_epoch])
    resumed = tiny_model(seed=123)
    result = train(resumed, *datasets(), cfg, tmp_path / "killed", resume=True)

    assert [r.epoch for r in result.history] == [0, 1, 2]
    assert [r.lr for r in result.history][1] == cfg.lr  # warmed up over epoch 0
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_checkpoint_from_before_best_marks_resumes_with_its_best_epoch_rebuilt(tmp_path: Path) -> None:
    """History rows saved without `is_best` and `val_aji` (older checkpoints) are marked by val Dice."""
    cfg = dataclasses.replace(TINY_TRAIN, precision="fp32", epochs=2)
    train(tiny_model(), *datasets(), cfg, tmp_path)
    state = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    state["history"] = [{k: v for k, v in row.items() if k not in ("is_best", "val_aji")} for row in state["history"]]
    del state["schedule"]
    torch.save(state, tmp_path / LAST_CHECKPOINT)
    dice = [row["val_dice"] for row in state["history"]]
    result = train(tiny_model(), *datasets(), cfg, tmp_path, resume=True)  # nothing left to train
    assert result.best_epoch == dice.index(max(dice))
    with pytest.raises(PatchUNetError, match="has no val_aji; resume by val_dice"):
        train(tiny_model(), *datasets(), dataclasses.replace(cfg, select_by="val_aji"), tmp_path, resume=True,
              val_scorer=lambda model: 0.5)  # fmt: skip


def test_a_resume_under_another_schedule_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY_TRAIN, precision="fp32", epochs=1)
    train(tiny_model(), *datasets(), cfg, tmp_path)
    cosine = dataclasses.replace(cfg, schedule="cosine", epochs=2)
    with pytest.raises(
        PatchUNetError, match=r"train\.schedule: the checkpoint to resume trained with plateau, not cosine"
    ):
        train(tiny_model(), *datasets(), cosine, tmp_path, resume=True)
