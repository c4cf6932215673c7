"""The `train` stage script end to end: real MLflow stores (SQLite, and a real `mlflow server`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import (
    REPO_ROOT,
    free_port,
    make_train_project,
    params_changed,
    run_pipeline,
    train_in,
    update_params,
    wait_for_http,
    wait_gone,
)
from conftest import mlflow_client as client

from patchunet import tracking
from patchunet.model.unet import load_model


def run_train(project: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    return run_pipeline(project, "train", tracking_uri, *args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One 2-epoch training in a SQLite store, shared by the read-only checks below."""
    return train_in(make_train_project(tmp_path_factory.mktemp("trained") / "project"))


def test_run_holds_params_per_epoch_metrics_and_tags(trained) -> None:
    project, uri = trained
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    run = client(uri).get_run(run_id)
    assert run.data.params["train.lr"] == "0.01" and run.data.params["model.depth"] == "2"
    assert run.data.params["dataset.patch_size"] == "32" and run.data.params["patch.size"] == "256"
    for name in ("train/loss", "val/loss", "val/dice", "val/iou", "lr", "time/epoch_seconds"):
        assert [m.step for m in client(uri).get_metric_history(run_id, name)] == [0, 1], name
    losses = [m.value for m in client(uri).get_metric_history(run_id, "train/loss")]
    assert losses[1] < losses[0]
    assert run.data.metrics["model/parameters"] > 0
    assert {"git_commit", "dvc_data_hash"} <= set(run.data.tags)


def test_checkpoints_are_run_artifacts_under_mlartifacts(trained) -> None:
    project, uri = trained
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    names = {a.path for a in client(uri).list_artifacts(run_id, "checkpoints")}
    assert names == {"checkpoints/best.pt", "checkpoints/last.pt"}
    assert list((project / "mlartifacts").rglob("best.pt"))


def test_training_logs_the_model_in_its_run_and_registers_nothing(trained) -> None:
    """`register` makes the version, after evaluation: a crashed or unevaluated run never reaches the registry."""
    project, uri = trained
    run = json.loads((project / "models/run.json").read_text())
    assert "version" not in run
    assert {"lr", "patch_size", "base_channels", "depth", "val_dice", "val_iou"} <= set(run["version_tags"])

    tracking.connect(uri)
    assert tracking.list_versions("patchunet") == []
    registered = tracking.load_logged_model(run["model_uri"])
    local = load_model(project / "models/patchunet.pt")
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(registered(x), local(x))


def test_stage_outputs_feed_dvc_metrics_and_plots(trained) -> None:
    project, _ = trained
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["epochs_run"] == 2 and 0 <= summary["val_dice"] <= 1
    rows = (project / "plots/train.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_loss,val_dice,val_iou,lr" and len(rows) == 3


def test_resume_continues_the_same_run(train_project: Path) -> None:
    project, uri = train_in(train_project)
    first = json.loads((project / "models/run.json").read_text())
    update_params(project, train={"epochs": 3})
    result = run_train(project, uri, "--resume")
    assert result.returncode == 0, result.stderr
    assert "epoch   3/3" in result.stdout and "epoch   1/3" not in result.stdout
    second = json.loads((project / "models/run.json").read_text())
    assert second["run_id"] == first["run_id"] and "version" not in second
    assert [m.step for m in client(uri).get_metric_history(first["run_id"], "val/dice")] == [0, 1, 2]


def test_resume_refuses_a_checkpoint_of_another_model_shape(trained) -> None:
    project, uri = trained
    with params_changed(project, model={"base_channels": 16}):
        result = run_train(project, uri, "--resume")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "last.pt: was trained with model params" in result.stderr


def test_unreachable_tracking_server_fails_before_training(train_project: Path) -> None:
    result = run_train(train_project, "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "error: MLflow tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert "epoch" not in result.stdout and "Traceback" not in result.stderr


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port, with a temporary SQLite backend."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", server, tmp_path / "server.log")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.e2e
def test_training_against_a_real_mlflow_server(train_project: Path, mlflow_server: str) -> None:
    result = run_train(train_project, mlflow_server)
    assert result.returncode == 0, result.stderr
    run_info = json.loads((train_project / "models/run.json").read_text())
    server = client(mlflow_server)
    run = server.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
    assert {a.path for a in server.list_artifacts(run_info["run_id"], "checkpoints")} == {
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    }
    tracking.connect(mlflow_server)
    assert tracking.list_versions("patchunet") == []  # `register` makes the version, once evaluated
    registered = tracking.load_logged_model(run_info["model_uri"])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(registered(x), load_model(train_project / "models/patchunet.pt")(x))


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


def test_a_diverging_loss_fails_the_run_in_one_line_and_writes_no_model(train_project: Path) -> None:
    """train.lr 1e6 once ended with a loss of 7.6e10, exit 0 and a model ready for `register`."""
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    update_params(train_project, train={"lr": 1.0e6})
    result = run_train(train_project, uri)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: training diverged at epoch 0") and "train.lr 1e+06 is likely too high" in line
    [run_id] = run_ids(uri)
    assert client(uri).get_run(run_id).info.status == "FAILED"
    assert not (train_project / "models/patchunet.pt").exists() and not (train_project / "models/run.json").exists()
    assert not tracking_models(uri)


def tracking_models(uri: str) -> list:
    tracking.connect(uri)
    return tracking.list_versions("patchunet")


def test_a_refit_trains_on_the_val_patches_too_and_keeps_its_last_epoch(train_project: Path) -> None:
    update_params(train_project, train={"epochs": 3, "refit": True, "select_by": "last", "schedule": "cosine"})
    project, uri = train_in(train_project)
    summary = json.loads((project / "metrics/train.json").read_text())
    assert summary["best_epoch"] == 2 and summary["epochs_run"] == 3
    run = client(uri).get_run(json.loads((project / "models/run.json").read_text())["run_id"])
    assert run.data.params["dataset.train_patches"] == "24"  # 16 train + 8 val patches
    best = torch.load(project / "models/checkpoints/best.pt", weights_only=True)
    last = torch.load(project / "models/checkpoints/last.pt", weights_only=True)
    assert all(torch.equal(best["model"][name], tensor) for name, tensor in last["model"].items())
