"""Worker processes sharing one study, on one machine or several: each runs trials until the
study holds `tune.n_trials` finished ones."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from patchunet.core.config import PatchConfig, TuneConfig
from patchunet.core.errors import ConfigError
from patchunet.core.locking import Lock
from patchunet.data.patches import PatchSet
from patchunet.tuning.objective import Objective
from patchunet.tuning.study import PARENT_RUN_ATTR, claim_worker_index, load_study, study_lock

log = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trials that count towards `tune.n_trials`; a failed trial does not (a retry takes its place)."""
POLL_SECONDS = 1.0
"""How often a worker with nothing to start looks again at the trials other workers are running."""
WAIT_LOG_SECONDS = 60
"""How often a waiting worker says what it waits for."""

WORKER_ATTR = "worker"
"""Each trial records the worker that ran it, as host:pid."""


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
    """Finished trials, and those running: what the study will hold if every running trial ends."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING)))


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    lock: Lock,
    *,
    heartbeat: bool,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Run trials (`study.optimize`) until the study holds `n_trials` finished ones, shared with
    any other workers; an exception of the objective fails its trial and ends the worker.

    Counting the trials and creating the next one happen under `lock` (`study_lock`), so workers
    never start more trials than asked between them: the lock is taken before `optimize` asks for
    a trial and let go as soon as the objective starts.

    When the trials other workers run would fill the study, this worker waits rather than stops:
    a worker killed mid-trial leaves its trial RUNNING until its heartbeat goes stale (RDB storage);
    it is then failed, and retried with the same values (`study.open_storage`) by a waiting worker.
    Without a `heartbeat` (journal storage) a running trial is trusted to finish.
    """
    turn = contextlib.ExitStack()

    def start(trial: optuna.Trial) -> float:
        turn.close()  # the trial exists: another worker may ask for its own
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        return objective(trial)

    def take_turn() -> bool:
        """True, holding the lock, when this worker should start a trial; False when the study is full."""
        last_said = time.monotonic()
        while True:
            turn.enter_context(lock())
            fail_stale_trials(study)  # and enqueue their retries
            finished = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
            if counted_trials(study) < n_trials:
                return True
            turn.close()
            if finished >= n_trials or not heartbeat:
                return False
            if time.monotonic() - last_said > WAIT_LOG_SECONDS:
                running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
                log.info(f"waiting for trials {running} of other workers to finish, or to go stale and be retried")
                last_said = time.monotonic()
            time.sleep(poll_seconds)

    def stop_when_full(study: optuna.Study, trial: FrozenTrial) -> None:
        if not take_turn():
            study.stop()

    with turn:
        if take_turn():
            study.optimize(start, callbacks=[stop_when_full])


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_trials(
    cfg: TuneConfig, params: dict[str, Any], patch_sets: Callable[[PatchConfig], tuple[PatchSet, PatchSet]]
) -> None:
    """One worker: trials of the study until it holds `tune.n_trials`, with a sampler seed of its own."""
    lock = study_lock(cfg)
    index = claim_worker_index(load_study(cfg), lock)
    study = load_study(cfg, index)
    log.info(f"worker {index}: joined study {cfg.study_name}")
    objective = Objective(params, cfg, patch_sets, study.user_attrs[PARENT_RUN_ATTR])
    run_worker(study, objective, cfg.n_trials, lock, heartbeat=not cfg.storage.startswith("journal:"))
