"""The study: its storage, pruner and sampler, its first trial, the settings it was run under, and
its MLflow parent run. Named, so that a rerun continues it."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from typing import Any

import optuna

from patchunet import tracking
from patchunet.core.config import Dimension, TuneConfig
from patchunet.core.errors import ConfigError, PatchUNetError
from patchunet.core.locking import Lock, storage_lock
from patchunet.tracking import names

log = logging.getLogger(__name__)

TPE_STARTUP_TRIALS = 4
"""Random trials before TPE starts modelling: few, since a CPU study holds few trials."""
PARENT_RUN_ATTR = "mlflow_parent_run_id"
SETTINGS_ATTR = "settings_fingerprint"
WORKERS_ATTR = "workers_joined"
HEARTBEAT_SECONDS = 60
GRACE_HEARTBEATS = 3
"""A trial silent for 3 heartbeats (`tune.heartbeat_seconds`) belongs to a dead worker."""


def open_storage(
    url: str, heartbeat_interval: int = HEARTBEAT_SECONDS, grace_period: int = GRACE_HEARTBEATS * HEARTBEAT_SECONDS
) -> optuna.storages.BaseStorage:
    """`journal:<file>`: a JournalStorage file, safe for several processes on one machine.
    Anything else is an RDB URL: `sqlite:///optuna.db` for one process, PostgreSQL for many.

    RDB trials beat a heartbeat, so the trial of a killed worker is failed rather than waited on,
    and retried once with the same values by the next worker that asks for a trial.
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:").removeprefix("//")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


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
        storage=open_storage(cfg.storage, cfg.heartbeat_seconds, GRACE_HEARTBEATS * cfg.heartbeat_seconds),
        pruner=make_pruner(cfg),
        direction="maximize",
        load_if_exists=True,
    )
    seed = cfg.seed + 1000 * worker_index + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    return study


def study_lock(cfg: TuneConfig) -> Lock:
    """The lock of the study's workers: on PostgreSQL storage it holds across machines."""
    return lambda: storage_lock(cfg.storage, f"tune|{cfg.study_name}")


def claim_worker_index(study: optuna.Study, lock: Lock) -> int:
    """A number no other worker of the study has, started on this machine or another: 0, 1, 2...

    It offsets the worker's sampler seed, so workers started at once do not draw the same points.
    """
    with lock():
        index = study.user_attrs.get(WORKERS_ATTR, 0)
        study.set_user_attr(WORKERS_ATTR, index + 1)
    return index


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


def parent_run(study: optuna.Study, cfg: TuneConfig) -> str:
    """The study's MLflow parent run: the one it recorded, or a new one if there is none yet."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id:
        try:
            tracking.get_run(run_id)
            return run_id
        except PatchUNetError:
            log.warning(f"tune: parent run {run_id} is not in this MLflow store; starting a new one")
    with tracking.run(cfg.experiment, run_name=cfg.study_name, tags={names.OPTUNA_STUDY: cfg.study_name}) as active:
        run_id = active.run_id
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id
