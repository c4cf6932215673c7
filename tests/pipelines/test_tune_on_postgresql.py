"""Optuna on the stack's PostgreSQL: two tune commands started apart, as on two machines, one killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import REPO_ROOT, make_tune_project, mlflow_client
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from patchunet.tuning.study import open_storage
from patchunet.tuning.workers import WORKER_ATTR

pytestmark = pytest.mark.distributed


def start_tune(project: Path, team_stack, log: Path) -> subprocess.Popen:
    """`patchunet tune` as a teammate's machine runs it: it knows only the repo, the two URLs and
    the password file."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "pipelines" / "tune.py")],
            cwd=project,
            env={**os.environ, "MLFLOW_TRACKING_URI": team_stack.tracking_uri, "PGPASSFILE": team_stack.pgpass_file},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def running_trial_of(study: optuna.Study, pids: set[int], timeout_s: float = 180) -> tuple[int, int]:
    """(trial number, pid) of the first trial seen running in one of `pids`, once it has both its
    params (lr and patch size): killed before, it has fewer to retry with, and the retry samples the rest."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if len(trial.params) < 2:
                continue
            pid = int(trial.user_attrs.get(WORKER_ATTR, ":0").rsplit(":", 1)[1])
            if pid in pids:
                return trial.number, pid
        time.sleep(0.1)
    raise AssertionError("no trial started")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
def test_a_worker_killed_mid_trial_has_its_trial_retried_and_the_study_ends_exact(
    team_stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSFILE", team_stack.pgpass_file)  # for this process's own look at the study
    study_name = f"killed-{uuid.uuid4().hex[:8]}"
    storage = team_stack.public_database_url("optuna")  # the password comes from PGPASSFILE
    project = make_tune_project(
        tmp_path / "project",
        study_name=study_name,
        storage=storage,
        n_trials=4,
        epochs_per_trial=2,
        pruner="none",
        heartbeat_seconds=1,
    )
    workers = [start_tune(project, team_stack, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        study = None
        while study is None:  # the first command to take the lock creates the study
            try:
                study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
            except KeyError:
                time.sleep(0.2)
        killed_number, killed_pid = running_trial_of(study, {w.pid for w in workers})
        os.kill(killed_pid, signal.SIGKILL)
        [survivor] = [w for w in workers if w.pid != killed_pid]
        assert survivor.wait(timeout=600) == 0, (tmp_path / f"worker{workers.index(survivor)}.log").read_text()
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()

    trials = optuna.load_study(study_name=study_name, storage=open_storage(storage)).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 1, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    killed = trials[killed_number]
    [retry] = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_number]
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == killed.params and retry.user_attrs[WORKER_ATTR].endswith(f":{survivor.pid}")
    assert len({tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE}) == 4

    client = mlflow_client(team_stack.tracking_uri)
    experiment = client.get_experiment_by_name("patchunet-tune")
    parents = client.search_runs([experiment.experiment_id], f"tags.`mlflow.runName` = '{study_name}'", max_results=10)
    assert len(parents) == 1  # one parent run, though two commands set the study up
