"""The train stage as a process: SIGTERM, SIGKILL and a second trainer, through pipelines/train.py
and `patchunet train`, against a SQLite MLflow store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
from conftest import REPO_ROOT, run_pipeline, update_params, wait_gone
from conftest import mlflow_client as client


def run_train(project: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    return run_pipeline(project, "train", tracking_uri, *args)


def train_until_first_epoch(project: Path, uri: str) -> subprocess.Popen:
    """Start the train stage (many epochs) and return once it has finished its first epoch."""
    update_params(project, train={"epochs": 500, "early_stopping_patience": 500})
    stage = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "pipelines" / "train.py")],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=(project / "stage.err").open("w"),
        text=True,
    )
    try:
        for line in stage.stdout:
            if line.startswith("epoch   1/"):
                return stage
        raise AssertionError(f"the stage ended before its first epoch:\n{(project / 'stage.err').read_text()}")
    except BaseException:
        stage.kill()
        stage.wait()
        raise


@contextlib.contextmanager
def stopped_at_the_end(stage: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield stage
    finally:
        if stage.poll() is None:
            stage.kill()
        stage.wait(timeout=60)
        stage.stdout.close()


def run_ids(uri: str) -> list[str]:
    experiment = client(uri).get_experiment_by_name("patchunet")
    return [run.info.run_id for run in client(uri).search_runs([experiment.experiment_id])]


def test_sigterm_ends_the_mlflow_run_killed_and_keeps_the_checkpoints(train_project: Path) -> None:
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    with stopped_at_the_end(train_until_first_epoch(train_project, uri)) as stage:
        stage.send_signal(signal.SIGTERM)
        assert stage.wait(timeout=120) == 130
    assert (train_project / "stage.err").read_text().splitlines()[-1] == "interrupted"  # on a line of its own
    [run_id] = run_ids(uri)
    assert client(uri).get_run(run_id).info.status == "KILLED"
    assert (train_project / "models/checkpoints/last.pt").is_file()
    assert not (train_project / "models/checkpoints/active_run.json").exists()


def test_after_a_sigkill_the_next_start_fails_the_run_and_keeps_its_checkpoints(train_project: Path) -> None:
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    with stopped_at_the_end(train_until_first_epoch(train_project, uri)) as stage:
        stage.send_signal(signal.SIGKILL)
        stage.wait(timeout=60)
    [killed] = run_ids(uri)
    assert client(uri).get_run(killed).info.status == "RUNNING"  # nothing could end it
    checkpoints = train_project / "models/checkpoints"
    killed_weights = torch.load(checkpoints / "last.pt", weights_only=True)["model"]

    update_params(train_project, train={"epochs": 1})
    result = run_train(train_project, uri)  # a plain rerun, as `dvc repro` does after a crash
    assert result.returncode == 0, result.stderr
    assert f"train: run {killed} was killed before it could end; marked FAILED in MLflow" in result.stdout
    assert client(uri).get_run(killed).info.status == "FAILED"
    [previous] = checkpoints.glob("previous-*")
    assert f"checkpoints of the previous run are now in {Path('models/checkpoints') / previous.name}" in result.stdout
    kept = torch.load(previous / "last.pt", weights_only=True)
    assert kept["mlflow_run_id"] == killed
    assert all(torch.equal(kept["model"][name], tensor) for name, tensor in killed_weights.items())


def make_checkout(project: Path) -> Path:
    """`project` as a checkout the `patchunet` command accepts: a dvc.yaml beside this repo's pipelines/."""
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "pipelines").symlink_to(REPO_ROOT / "pipelines")
    return project


def start_until_first_epoch(project: Path, uri: str, command: list[str]) -> subprocess.Popen:
    """Start `command` (a training of many epochs) in `project`; return once its first epoch is done."""
    stage = subprocess.Popen(
        command,
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=(project / "stage.err").open("w"),
        text=True,
    )
    try:
        for line in stage.stdout:
            if line.startswith("epoch   1/"):
                return stage
        raise AssertionError(f"the stage ended before its first epoch:\n{(project / 'stage.err').read_text()}")
    except BaseException:
        stage.kill()
        stage.wait()
        raise


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_patchunet_train_by_its_pid_leaves_no_trainer_alive(train_project: Path, signum: int) -> None:
    """`patchunet train` becomes the trainer (exec), and its loader workers die with it."""
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    update_params(train_project, train={"epochs": 500, "early_stopping_patience": 500, "num_workers": 1})
    command = [sys.executable, "-m", "patchunet", "train"]
    with stopped_at_the_end(start_until_first_epoch(make_checkout(train_project), uri, command)) as stage:
        trainer = psutil.Process(stage.pid)
        assert "pipelines/train.py" in " ".join(trainer.cmdline())  # the process the user sees is the trainer
        processes = [trainer, *trainer.children(recursive=True)]
        try:
            os.kill(stage.pid, signum)
            alive = wait_gone(processes, timeout=120)  # reaps the trainer: its status is in `trainer`
            assert not alive, [p.cmdline() for p in alive]
        finally:
            for process in processes:  # whatever the outcome, stop what this test started
                if process.is_running():
                    process.kill()
    if signum == signal.SIGTERM:
        assert trainer.returncode == 130 and client(uri).get_run(run_ids(uri)[0]).info.status == "KILLED"


def test_a_second_trainer_is_refused_while_the_first_lives_and_accepted_after(train_project: Path) -> None:
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    checkpoints = train_project / "models/checkpoints"
    with stopped_at_the_end(train_until_first_epoch(train_project, uri)) as first:
        result = run_train(train_project, uri)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: {Path('models/checkpoints/train.lock')}: PID {first.pid} is already")
        assert not list(checkpoints.glob("previous-*")) and (checkpoints / "last.pt").is_file()  # nothing moved
        assert len(run_ids(uri)) == 1 and first.poll() is None  # the first trains on, its run untouched
        first.kill()
        first.wait(timeout=60)
    update_params(train_project, train={"epochs": 1})
    result = run_train(train_project, uri)
    assert result.returncode == 0, result.stderr
    assert not (checkpoints / "train.lock").exists()
