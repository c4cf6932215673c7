"""The train stage in process, end to end: real MLflow stores (SQLite, and a real `mlflow server`)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    free_port,
    make_train_project,
    params_changed,
    run_in_process,
    train_in,
    update_params,
    wait_for_http,
)
from conftest import mlflow_client as client

from patchunet import tracking
from patchunet.core.errors import PatchUNetError
from patchunet.model.unet import load_model
from patchunet.stages.train import TrainSummary


def train(project: Path, tracking_uri: str, **options: object) -> TrainSummary:
    return run_in_process("train", project, tracking_uri, **options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One 2-epoch training in a SQLite store, shared by the read-only checks below."""
    return train_in(make_train_project(tmp_path_factory.mktemp("trained") / "project"))


def run_ids(uri: str) -> list[str]:
    experiment = client(uri).get_experiment_by_name("patchunet")
    return [run.info.run_id for run in client(uri).search_runs([experiment.experiment_id])]


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


def test_resume_continues_the_same_run(train_project: Path, caplog: pytest.LogCaptureFixture) -> None:
    project, uri = train_in(train_project)
    first = json.loads((project / "models/run.json").read_text())
    update_params(project, train={"epochs": 3})
    caplog.set_level(logging.INFO, logger="patchunet")
    summary = train(project, uri, resume=True)
    epochs = [message.split()[1] for message in caplog.messages if message.startswith("epoch ")]
    assert epochs == ["3/3"] and summary.run_id == first["run_id"]
    second = json.loads((project / "models/run.json").read_text())
    assert second["run_id"] == first["run_id"] and "version" not in second
    assert [m.step for m in client(uri).get_metric_history(first["run_id"], "val/dice")] == [0, 1, 2]


def test_resume_refuses_a_checkpoint_of_another_model_shape(trained) -> None:
    project, uri = trained
    with params_changed(project, model={"base_channels": 16}), pytest.raises(PatchUNetError) as refused:
        train(project, uri, resume=True)
    assert "last.pt: was trained with model params" in str(refused.value)


def test_unreachable_tracking_server_fails_before_training(train_project: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(PatchUNetError, match=re.escape("MLflow tracking server http://127.0.0.1:9 is unreachable")):
        train(train_project, "http://127.0.0.1:9")
    assert "parameters" not in capsys.readouterr().out and not (train_project / "models/run.json").exists()


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
    train(train_project, mlflow_server)
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


def test_a_diverging_loss_fails_the_run_in_one_line_and_writes_no_model(train_project: Path) -> None:
    """train.lr 1e6 once ended with a loss of 7.6e10, exit 0 and a model ready for `register`."""
    uri = f"sqlite:///{train_project / 'mlflow.db'}"
    update_params(train_project, train={"lr": 1.0e6})
    with pytest.raises(PatchUNetError) as diverged:
        train(train_project, uri)
    line = str(diverged.value)
    assert line.startswith("training diverged at epoch 0") and "train.lr 1e+06 is likely too high" in line
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
