"""Worker processes sharing one study: each runs trials until the study holds `tune.n_trials`."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from patchunet.config import PatchConfig, TuneConfig
from patchunet.data.patches import PatchSet
from patchunet.errors import ConfigError
from patchunet.locking import exclusive_lock
from patchunet.tuning.objective import Objective
from patchunet.tuning.study import PARENT_RUN_ATTR, load_study

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
"""Trials that count towards `tune.n_trials`: finished ones, and those another worker is running."""


def check_workers(cfg: TuneConfig, workers: int) -> None:
    """Refuse a worker count the storage cannot serve, before any trial runs."""
    if workers < 1:
        raise ConfigError("tune.workers", f"--workers must be 1 or more, got {workers}")
    if workers > 1 and cfg.storage.startswith("sqlite"):
        raise ConfigError(
            "tune.storage",
            f"{cfg.storage} cannot serve {workers} worker processes safely; use journal:optuna.journal "
            "(one machine) or a PostgreSQL URL (several)",
        )


def counted_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int, lock: str) -> None:
    """Run trials (`study.optimize`) until the study holds `n_trials` counted ones, shared with any
    other workers; an exception of the objective fails its trial and ends the worker.

    Counting the trials and creating the next one happen under the file lock named `lock`, so
    workers on this machine never start more trials than asked between them: the lock is taken
    before `optimize` asks for a trial (at the start, then after each trial) and let go as soon as
    the objective starts. Trials whose heartbeat stopped (RDB storage) are failed before counting,
    so a dead worker's trial is run again rather than counted.
    """
    turn = contextlib.ExitStack()

    def start(trial: optuna.Trial) -> float:
        turn.close()  # the trial exists: another worker may ask for its own
        return objective(trial)

    def stop_when_full(study: optuna.Study, trial: FrozenTrial) -> None:
        turn.enter_context(exclusive_lock(lock))
        fail_stale_trials(study)
        MaxTrialsCallback(n_trials, states=COUNTED_STATES)(study, trial)

    with turn:
        turn.enter_context(exclusive_lock(lock))
        fail_stale_trials(study)
        if counted_trials(study) < n_trials:
            study.optimize(start, callbacks=[stop_when_full])


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_trials(
    cfg: TuneConfig, params: dict[str, Any], patch_sets: Callable[[PatchConfig], tuple[PatchSet, PatchSet]], index: int
) -> None:
    """Worker `index` (0 when it is the only one): trials of the study until it holds `tune.n_trials`."""
    study = load_study(cfg, index)
    objective = Objective(params, cfg, patch_sets, study.user_attrs[PARENT_RUN_ATTR])
    run_worker(study, objective, cfg.n_trials, lock=f"tune|{cfg.storage}|{cfg.study_name}")
