"""Optuna tuning: the search space, the trial objective, the study and its storage.

A trial overrides the params.yaml keys named in `tune.space` (by default `train.lr` and
`patch.size`), cuts train and val patches of its size from the split's training images (cached
per size in each process; never the test set), and trains with the library's own `fit` for at
most `tune.epochs_per_trial` epochs. The objective is the best val Dice of those epochs: pixel
Dice pooled over the val patches, which tile the whole val images (the training loop's own
val/dice). It is reported after every epoch, so the pruner can stop a poor trial early.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from patchunet import tracking
from patchunet.augment import build_augmentation
from patchunet.config import (
    AugmentConfig,
    Dimension,
    ModelConfig,
    PatchConfig,
    TrainConfig,
    TuneConfig,
    parse_section,
)
from patchunet.data import PatchDataset
from patchunet.errors import ConfigError
from patchunet.locking import exclusive_lock
from patchunet.model import PatchUNet
from patchunet.patches import PatchSet
from patchunet.tiles import labelled_tiles
from patchunet.tracking import names
from patchunet.train import EpochResult, fit

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
"""Trials that count towards `tune.n_trials`: finished ones, and those another worker is running."""
TPE_STARTUP_TRIALS = 4
"""Random trials before TPE starts modelling: few, since a CPU study holds few trials."""
PARENT_RUN_ATTR = "mlflow_parent_run_id"
SETTINGS_ATTR = "settings_fingerprint"


def validate_space(cfg: TuneConfig, params: dict[str, Any], image_side: int) -> None:
    """Refuse a search space the trials could not run, naming the key, before any training."""
    size_multiple = parse_section(ModelConfig, params, "model").size_multiple
    for dimension in cfg.dimensions:
        section, name = dimension.key.split(".")
        if name not in params.get(section, {}):
            raise ConfigError(f"tune.space.{dimension.key}", f"params.yaml has no key {dimension.key} to override")
        if dimension.key != "patch.size":
            continue
        if dimension.choices is None:
            raise ConfigError("tune.space.patch.size", "must be {choices: [...]}: most sizes in a range fit no model")
        for size in dimension.choices:
            if not isinstance(size, int) or size <= 0:
                raise ConfigError("tune.space.patch.size", f"patch sizes must be positive integers, got {size!r}")
            if size > image_side:
                raise ConfigError("tune.space.patch.size", f"{size} is larger than the images ({image_side} px)")
            if size % size_multiple:
                raise ConfigError(
                    "tune.space.patch.size", f"{size} is not divisible by {size_multiple} (2**model.depth)"
                )


def suggest(trial: optuna.Trial, dimensions: list[Dimension]) -> dict[str, Any]:
    """The trial's value for each searched key."""
    values: dict[str, Any] = {}
    for d in dimensions:
        if d.choices is not None:
            values[d.key] = trial.suggest_categorical(d.key, list(d.choices))
        elif isinstance(d.low, int) and isinstance(d.high, int):
            values[d.key] = trial.suggest_int(d.key, d.low, d.high, log=d.log)
        else:
            values[d.key] = trial.suggest_float(d.key, d.low, d.high, log=d.log)
    return values


def apply_overrides(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of params.yaml with `values` ({"section.name": value}) put in.

    A searched patch size also sets the stride to match, unless the stride is searched too:
    patches then tile without overlap, as the defaults do.
    """
    merged = copy.deepcopy(params)
    for key, value in values.items():
        section, name = key.split(".")
        merged[section][name] = value
    if "patch.size" in values and "patch.stride" not in values:
        merged["patch"]["stride"] = values["patch.size"]
    return merged


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """`journal:<file>`: a JournalStorage file, safe for several processes on one machine.
    Anything else is an RDB URL: `sqlite:///optuna.db` for one process, PostgreSQL for many."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:").removeprefix("//")))
    # the heartbeat marks a killed worker's trial FAILED, so a resumed study does not wait on it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)


def make_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.pruner_warmup_epochs)
    if cfg.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def load_study(cfg: TuneConfig, worker_index: int = 0) -> optuna.Study:
    """Create the named study, or load it to continue where it stopped.

    The TPE seed is `tune.seed` offset by the worker and by the trials already held, so parallel
    workers and a resumed study do not draw the same random start points again.
    """
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=open_storage(cfg.storage),
        pruner=make_pruner(cfg),
        direction="maximize",
        load_if_exists=True,
    )
    seed = cfg.seed + 1000 * worker_index + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    return study


def enqueue_defaults(study: optuna.Study, dimensions: list[Dimension], params: dict[str, Any]) -> bool:
    """Make params.yaml's own values the first trial of a new study, as the untuned baseline.

    Skipped (returns False) when the study already has trials or a value lies outside the space.
    """
    if study.get_trials(deepcopy=False):
        return False
    values = {}
    for d in dimensions:
        section, name = d.key.split(".")
        value = params[section][name]
        inside = value in d.choices if d.choices is not None else d.low <= value <= d.high
        if not inside:
            return False
        values[d.key] = value
    study.enqueue_trial(values)
    return True


def settings_fingerprint(cfg: TuneConfig, params: dict[str, Any]) -> str:
    """A hash of everything a trial depends on besides the searched values.

    A study must not mix trials run under different settings, so a rerun with other settings
    is refused (see `check_settings`) rather than continued.
    """
    searched = {d.key for d in cfg.dimensions}
    fixed = {
        section: {k: v for k, v in params[section].items() if f"{section}.{k}" not in searched}
        for section in ("model", "train", "augment", "patch", "split")
    }
    fixed["tune"] = {"epochs_per_trial": cfg.epochs_per_trial, "space": cfg.space}
    return hashlib.sha1(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_settings(study: optuna.Study, fingerprint: str) -> None:
    """Record the settings of a new study; refuse to continue one made with other settings."""
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if recorded is None:
        study.set_user_attr(SETTINGS_ATTR, fingerprint)
    elif recorded != fingerprint:
        raise ConfigError(
            "tune.study_name",
            f"study {study.study_name} was run with other model/train/augment/patch/split or tune settings; "
            "restore them, or name a new study",
        )


def counted_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


class PatchCache:
    """Train and val patch sets per patch size, cut once per process from the split's images."""

    def __init__(self, split: dict[str, list[str]], images_dir: Path, labels_dir: Path, augment: AugmentConfig) -> None:
        self.split, self.images_dir, self.labels_dir, self.augment = split, images_dir, labels_dir, augment
        self._sets: dict[tuple[int, int], tuple[PatchSet, PatchSet]] = {}

    def __call__(self, patch: PatchConfig) -> tuple[PatchSet, PatchSet]:
        key = (patch.size, patch.stride)
        if key not in self._sets:
            self._sets[key] = tuple(  # type: ignore[assignment]
                PatchSet.from_tiles(
                    labelled_tiles(self.split[side], self.images_dir, self.labels_dir, patch.size, augment),
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
    log: Callable[[str], None] = print

    def __call__(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.cfg.dimensions)
        params = apply_overrides(self.params, values)
        model_cfg = parse_section(ModelConfig, params, "model")
        train_cfg = dataclasses.replace(parse_section(TrainConfig, params, "train"), epochs=self.cfg.epochs_per_trial)
        train_store, val_store = self.patch_sets(parse_section(PatchConfig, params, "patch"))
        augment_cfg = parse_section(AugmentConfig, params, "augment")
        augmentation = build_augmentation(augment_cfg) if train_cfg.online_augment else None
        train_set = PatchDataset(train_store, augmentation, seed=train_cfg.seed, head=model_cfg.instance_head)
        torch.manual_seed(train_cfg.seed)
        model = PatchUNet(model_cfg)
        described = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        val_set = PatchDataset(val_store, head=model_cfg.instance_head)
        self.log(f"trial {trial.number}: {described}; {len(train_set)} train / {len(val_set)} val patches")

        tags = {names.OPTUNA_STUDY: self.cfg.study_name, names.OPTUNA_TRIAL_NUMBER: trial.number}
        with tracking.run(
            self.cfg.experiment, parent_run_id=self.parent_run_id, run_name=f"trial {trial.number}", tags=tags
        ):
            tracking.log_params({**values, names.TRIAL_PARAM: trial.number, names.EPOCHS_PARAM: train_cfg.epochs})
            state, value = TrialState.COMPLETE, 0.0
            with tempfile.TemporaryDirectory(prefix="patchunet-trial-") as checkpoints:
                try:
                    result = fit(
                        model,
                        train_set,
                        val_set,
                        train_cfg,
                        Path(checkpoints),
                        on_epoch_end=lambda epoch: self.report(trial, epoch),
                    )
                    value = result.best.val_dice
                    tracking.log_metrics({names.OBJECTIVE: value})
                except optuna.TrialPruned:
                    state = TrialState.PRUNED
            tracking.set_tags({names.OPTUNA_STATE: state.name})
        if state == TrialState.PRUNED:
            self.log(f"trial {trial.number}: pruned")
            raise optuna.TrialPruned()
        self.log(f"trial {trial.number}: best val dice {value:.4f}")
        return value

    def report(self, trial: optuna.Trial, epoch: EpochResult) -> None:
        """Log the epoch to the child run and to Optuna; prune here if the pruner says so."""
        tracking.log_metrics(
            {names.TRAIN_LOSS: epoch.train_loss, names.VAL_LOSS: epoch.val_loss, names.VAL_DICE: epoch.val_dice},
            step=epoch.epoch,
        )
        self.log(
            f"trial {trial.number} epoch {epoch.epoch + 1}/{self.cfg.epochs_per_trial}: "
            f"val dice {epoch.val_dice:.4f}  {epoch.seconds:.0f} s"
        )
        trial.report(epoch.val_dice, epoch.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()


def run_worker(study: optuna.Study, objective: Objective, n_trials: int) -> None:
    """Run trials until the study holds `n_trials` counted ones, shared with any other workers.

    Checking the count and creating the next trial happen under one file lock, so workers on
    this machine never start more trials than asked between them. Trials beat a heartbeat (RDB
    storage), and a trial whose worker died is marked FAILED before counting, so it is rerun.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize uses

    while True:
        with exclusive_lock(f"tune|{objective.cfg.storage}|{study.study_name}"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if counted_trials(study) >= n_trials:
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "heartbeat is meant for optimize()"
                trial = study.ask()
        with get_heartbeat_thread(trial._trial_id, study._storage):
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)


def best_params(study: optuna.Study, cfg: TuneConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The best trial's values as params.yaml sections, and the one command that applies them."""
    best = study.best_trial
    overrides = apply_overrides(params, best.params)
    changed = {key for key in best.params} | ({"patch.stride"} if "patch.size" in best.params else set())
    sections: dict[str, dict[str, Any]] = {}
    for key in sorted(changed):
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = overrides[section][name]
    settings = " ".join(f"-S {key}={overrides[key.split('.')[0]][key.split('.')[1]]}" for key in sorted(changed))
    return {
        "study": cfg.study_name,
        "best_trial": best.number,
        "val_dice": best.value,
        "params": sections,
        "apply": f"dvc exp run {settings}",
    }


def trial_rows(study: optuna.Study, dimensions: list[Dimension]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, epochs run, seconds and the searched values."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "val_dice": trial.value,
                "epochs": len(trial.intermediate_values),
                "seconds": round(seconds, 1) if seconds is not None else None,
                **{d.key: trial.params.get(d.key) for d in dimensions},
            }
        )
    return rows


def write_figures(study: optuna.Study, dimensions: list[Dimension], folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and the lr x patch-size contour, as HTML
    (plotly) and PNG (matplotlib). A figure the study cannot support yet is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as plotly_vis
    import optuna.visualization.matplotlib as mpl_vis

    keys = [d.key for d in dimensions]
    figures: dict[str, tuple[str, dict]] = {
        "optimization_history": ("plot_optimization_history", {}),
        "param_importances": ("plot_param_importances", {}),
        "contour": ("plot_contour", {"params": keys[:2]}) if len(keys) >= 2 else ("plot_slice", {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (function, kwargs) in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
            try:
                getattr(plotly_vis, function)(study, **kwargs).write_html(folder / f"{name}.html")
                axes = getattr(mpl_vis, function)(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                print(f"tune: figure {name} skipped ({exc})")
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written += [folder / f"{name}.html", folder / f"{name}.png"]
    return written
