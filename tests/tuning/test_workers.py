"""Workers sharing a study, with a trivial objective: real Journal and SQLite storage, real processes."""

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from patchunet.core.locking import storage_lock
from patchunet.tuning.study import open_storage
from patchunet.tuning.workers import WORKER_ATTR, run_worker

WORKER = """
import os, sys, time
import optuna
from patchunet.core.locking import storage_lock
from patchunet.tuning.study import open_storage
from patchunet.tuning.workers import run_worker

url, n_trials, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    if mode == "die":
        os._exit(1)  # as a killed worker: no chance to tell the storage anything
    time.sleep(0.2)
    return x

run_worker(study, objective, n_trials, lambda: storage_lock(url, "s"), heartbeat=not url.startswith("journal:"))
"""


def start_workers(url: str, n_trials: int, count: int, mode: str = "work") -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", WORKER, url, str(n_trials), mode], stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def lock(url: str) -> Callable[[], contextlib.AbstractContextManager[None]]:
    return lambda: storage_lock(url, "s")


def x_squared(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1) ** 2


def test_three_workers_on_a_journal_file_run_exactly_the_trials_asked(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'optuna.journal'}"
    optuna.create_study(study_name="s", storage=open_storage(url))
    workers = start_workers(url, n_trials=7, count=3)
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).trials
    assert sorted(t.number for t in trials) == list(range(7))
    assert {t.state for t in trials} == {TrialState.COMPLETE}


def test_a_study_that_holds_its_trials_runs_none_more(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    run_worker(study, x_squared, 2, lock(str(tmp_path)), heartbeat=True)
    run_worker(study, x_squared, 2, lock(str(tmp_path)), heartbeat=True)  # a resumed, finished study
    assert len(study.trials) == 2
    run_worker(study, x_squared, 3, lock(str(tmp_path)), heartbeat=True)  # asked for one more
    assert [t.number for t in study.trials] == [0, 1, 2]


def test_an_objective_that_fails_fails_its_trial_and_stops_the_worker(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))

    def broken(trial: optuna.Trial) -> float:
        raise ValueError("broken objective")

    with pytest.raises(ValueError, match="broken objective"):
        run_worker(study, broken, 3, lock(str(tmp_path)), heartbeat=True)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    run_worker(study, x_squared, 1, lock(str(tmp_path)), heartbeat=True)  # a failed trial does not count
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_the_trial_of_a_killed_worker_is_failed_and_run_again_with_its_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    [dead] = start_workers(url, n_trials=1, count=1, mode="die")
    assert dead.wait(timeout=60) == 1
    assert [t.state for t in study.trials] == [TrialState.RUNNING]  # nothing could end it
    time.sleep(3)  # past the grace period: its heartbeat has stopped
    run_worker(study, lambda trial: trial.suggest_float("x", 0, 1), 1, lock(str(tmp_path)), heartbeat=True)
    killed, retried = study.trials
    assert (killed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retried.params == killed.params and retried.value == killed.params["x"]


def test_a_worker_waits_for_a_killed_workers_trial_and_runs_it_again(tmp_path: Path) -> None:
    """The killed worker's trial would fill the study: the survivor must not stop, but wait until
    the trial's heartbeat goes stale, then run it again."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    [dead] = start_workers(url, n_trials=1, count=1, mode="die")
    assert dead.wait(timeout=60) == 1
    run_worker(
        study, lambda trial: trial.suggest_float("x", 0, 1), 1, lock(url), heartbeat=True, poll_seconds=0.2
    )  # at once
    killed, retried = study.trials
    assert (killed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retried.params == killed.params
    assert killed.user_attrs[WORKER_ATTR].endswith(f":{dead.pid}")


def test_without_a_heartbeat_a_running_trial_is_trusted_to_finish(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'optuna.journal'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    [dead] = start_workers(url, n_trials=1, count=1, mode="die")
    assert dead.wait(timeout=60) == 1
    run_worker(study, x_squared, 1, lock(url), heartbeat=False)  # returns at once: nothing could tell the trial is dead
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
