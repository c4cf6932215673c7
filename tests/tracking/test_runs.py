"""`tracking.runs`: starting, reopening and ending runs, a DVC experiment's name on its runs, and
failing a run whose process is gone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import connect_to_new_store
from mlflow.tracking import MlflowClient
from test_store import as_a_queued_dvc_experiment_stage

from patchunet import tracking


def test_a_run_ends_finished_or_failed_as_its_block_does(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp") as done:
        pass
    with pytest.raises(ValueError), tracking.run("exp") as failed:
        raise ValueError("the block failed")
    assert (tracking.get_run(done.run_id).status, tracking.get_run(failed.run_id).status) == ("FINISHED", "FAILED")


def finished_process_id() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_run_whose_process_is_gone_is_failed_at_the_next_start(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    record = tmp_path / "checkpoints" / "active_run.json"
    with tracking.run("exp") as active, tracking.recorded_as_running(active.run_id, record):
        assert json.loads(record.read_text())["pid"] == os.getpid()
        assert tracking.fail_abandoned_run(record) is None  # this process is alive: left alone
        assert MlflowClient().get_run(active.run_id).info.status == "RUNNING"
        # as a SIGKILL leaves it: the record of a process that is gone, the run still RUNNING
        gone = {"run_id": active.run_id, "pid": finished_process_id(), "host": socket.gethostname()}
        record.write_text(json.dumps(gone))
        assert tracking.fail_abandoned_run(record) == active.run_id
        assert MlflowClient().get_run(active.run_id).info.status == "FAILED"
        assert not record.exists()


def test_an_abandoned_run_of_another_store_is_nothing_to_fail(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    record = tmp_path / "active_run.json"
    record.write_text(json.dumps({"run_id": "0" * 32, "pid": finished_process_id(), "host": socket.gethostname()}))
    assert tracking.fail_abandoned_run(record) is None and not record.exists()


def test_a_queued_experiments_run_and_artifacts_land_in_the_dvc_roots_store(tmp_path: Path, monkeypatch) -> None:
    copy = as_a_queued_dvc_experiment_stage(tmp_path, monkeypatch)
    (copy / "note.txt").write_text("kept")
    tracking.connect(tracking.resolve_tracking_uri(None))
    with tracking.run("exp") as active:
        tracking.log_artifact(copy / "note.txt")
    shutil.rmtree(tmp_path / ".dvc")  # DVC deletes the copy after the run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(active.run_id)] == ["note.txt"]


def test_a_run_started_in_a_dvc_experiment_is_named_and_tagged_after_it(tmp_path: Path, monkeypatch) -> None:
    as_a_queued_dvc_experiment_stage(tmp_path, monkeypatch, name="lr-low")
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracking.run("exp") as active:
        pass
    found = tracking.get_run(active.run_id)
    assert found.name == "lr-low"
    assert found.tags[tracking.names.DVC_EXPERIMENT] == "lr-low"
    assert found.tags[tracking.names.DVC_BASELINE_REV] == "0123abcd" * 5


def test_a_named_run_in_a_dvc_experiment_keeps_its_name_and_gets_the_tag(tmp_path: Path, monkeypatch) -> None:
    as_a_queued_dvc_experiment_stage(tmp_path, monkeypatch, name="lr-low")
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracking.run("exp", run_name="trial 3", tags={"optuna.trial_number": 3}) as active:
        pass
    found = tracking.get_run(active.run_id)
    assert (found.name, found.tags[tracking.names.DVC_EXPERIMENT]) == ("trial 3", "lr-low")


def test_a_reopened_run_is_not_retagged_by_the_experiment_that_reopens_it(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp", run_name="first") as active:
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "lr-low")
    with tracking.run("exp", run_id=active.run_id):
        pass
    found = tracking.get_run(active.run_id)
    assert found.name == "first" and tracking.names.DVC_EXPERIMENT not in found.tags


def test_outside_a_dvc_experiment_a_run_has_no_dvc_tags(tmp_path: Path, monkeypatch) -> None:
    for variable in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(variable, raising=False)
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp") as active:
        pass
    tags = tracking.get_run(active.run_id).tags
    assert tracking.names.DVC_EXPERIMENT not in tags and tracking.names.DVC_BASELINE_REV not in tags
