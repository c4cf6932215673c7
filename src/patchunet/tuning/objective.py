"""One trial: the params.yaml keys of `tune.space` overridden (by default `train.lr` and
`patch.size`), train and val patches of the trial's size cut from the split's training images
(cached per size in each process; never the test set), then the training builder and `fit` for
at most `tune.epochs_per_trial` epochs, as an MLflow child run of the study's parent run.

The objective is the best val Dice of those epochs: pixel Dice pooled over the val patches, which
tile the whole val images (the training loop's own val/dice). It is reported after every epoch,
so the pruner can stop a poor trial early. Trials train as the train stage does (train.precision,
train.schedule, ...), but pick their best epoch by that val Dice whatever train.select_by says.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from patchunet import tracking
from patchunet.core.config import AugmentConfig, ModelConfig, PatchConfig, TrainConfig, TuneConfig, parse_section
from patchunet.data.image_copies import labelled_copies
from patchunet.data.patches import PatchSet
from patchunet.tracking import names
from patchunet.training.builder import Training, build_training
from patchunet.training.devices import pick_device
from patchunet.training.loop import EpochResult, LossDiverged, fit
from patchunet.tuning.space import apply_overrides, suggest

log = logging.getLogger(__name__)


class PatchCache:
    """Train and val patch sets per patch size, cut once per process from the split's images."""

    def __init__(self, split: dict[str, list[str]], images_dir: Path, labels_dir: Path, augment: AugmentConfig) -> None:
        self.split, self.images_dir, self.labels_dir, self.augment = split, images_dir, labels_dir, augment
        self._sets: dict[tuple[int, int], tuple[PatchSet, PatchSet]] = {}

    def __call__(self, patch: PatchConfig) -> tuple[PatchSet, PatchSet]:
        key = (patch.size, patch.stride)
        if key not in self._sets:
            self._sets[key] = tuple(  # type: ignore[assignment]
                PatchSet.from_images(
                    labelled_copies(self.split[side], self.images_dir, self.labels_dir, patch.size, augment),
                    patch.size,
                    patch.stride,
                )
                for side, augment in (("train", self.augment), ("val", None))
            )
        return self._sets[key]


@dataclasses.dataclass
class Objective:
    """One trial: train with the suggested params, as an MLflow child run of the study's run."""

    params: dict[str, Any]
    cfg: TuneConfig
    patch_sets: Callable[[PatchConfig], tuple[PatchSet, PatchSet]]
    parent_run_id: str

    def __call__(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.cfg.dimensions)
        params = apply_overrides(self.params, values)
        train_cfg = dataclasses.replace(  # the study's objective is val Dice, so it picks each trial's best epoch
            parse_section(TrainConfig, params, "train"),
            epochs=self.cfg.epochs_per_trial,
            select_by="val_dice",
            refit=False,
        )
        train_patches, val_patches = self.patch_sets(parse_section(PatchConfig, params, "patch"))
        training = build_training(
            parse_section(ModelConfig, params, "model"),
            train_cfg,
            parse_section(AugmentConfig, params, "augment"),
            train_patches,
            val_patches,
            label=f"trial {trial.number} ",
        )
        described = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        log.info(
            f"trial {trial.number}: {described}; "
            f"{len(train_patches.index)} train / {len(val_patches.index)} val patches"
        )

        tags = {names.OPTUNA_STUDY: self.cfg.study_name, names.OPTUNA_TRIAL_NUMBER: trial.number}
        with tracking.run(
            self.cfg.experiment, parent_run_id=self.parent_run_id, run_name=f"trial {trial.number}", tags=tags
        ):
            tracking.log_params({**values, names.TRIAL_PARAM: trial.number, names.EPOCHS_PARAM: train_cfg.epochs})
            value = train(trial, training, train_cfg)
            tracking.set_tags({names.OPTUNA_STATE: (TrialState.PRUNED if value is None else TrialState.COMPLETE).name})
        if value is None:
            log.info(f"trial {trial.number}: pruned")
            raise optuna.TrialPruned()
        log.info(f"trial {trial.number}: best val dice {value:.4f}")
        return value


def train(trial: optuna.Trial, training: Training, train_cfg: TrainConfig) -> float | None:
    """The best val Dice of the trial's epochs, logged to the active run; None when it was pruned
    or its loss diverged (no score: it is pruned, and the workers go on to the next trial)."""
    callbacks = [training.log_epoch, lambda epoch: report(trial, epoch)]
    with tempfile.TemporaryDirectory(prefix="patchunet-trial-") as checkpoints:
        try:
            result = fit(
                training.model,
                training.train_loader,
                training.val_loader,
                train_cfg,
                pick_device(),
                Path(checkpoints),
                callbacks=callbacks,
            )
        except optuna.TrialPruned:
            return None
        except LossDiverged as exc:  # a learning rate the search may try: its trial ends, the study goes on
            log.info(f"trial {trial.number}: {exc}")
            return None
    tracking.log_metrics({names.OBJECTIVE: result.best.val_dice})
    return result.best.val_dice


def report(trial: optuna.Trial, epoch: EpochResult) -> None:
    """Tell Optuna the epoch's val Dice; stop the trial here if the pruner says so."""
    trial.report(epoch.val_dice, epoch.epoch)
    if trial.should_prune():
        raise optuna.TrialPruned()
