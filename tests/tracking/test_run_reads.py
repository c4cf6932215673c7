"""`tracking.run_reads`: runs, metric histories and artifacts read back as the project's records."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import connect_to_new_store

from patchunet import tracking
from patchunet.core.errors import TrackingError


def test_metric_histories_and_experiment_runs_read_back_in_order(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    assert tracking.experiment_runs("no-such-experiment") == []
    with tracking.run("exp", run_name="first") as active:
        for step, value in [(1, 0.5), (0, 0.25), (2, 0.75)]:
            tracking.log_metrics({"val/dice": value}, step=step)
    with tracking.run("exp", run_name="second"):
        pass
    assert tracking.metric_history(active.run_id, "val/dice") == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert tracking.metric_history(active.run_id, "val/loss") == []
    assert [r.name for r in tracking.experiment_runs("exp")] == ["second", "first"]


def test_an_artifact_downloads_and_one_not_logged_yet_is_none(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    (tmp_path / "note.txt").write_text("hello")
    with tracking.run("exp") as active:
        tracking.log_artifact(tmp_path / "note.txt", artifact_path="evaluation")
    copied = tracking.download_artifact(active.run_id, "evaluation/note.txt", tmp_path / "download")
    assert copied is not None and copied.read_text() == "hello"
    assert tracking.download_artifact(active.run_id, "evaluation/absent.txt", tmp_path / "download") is None
    assert tracking.download_artifact(active.run_id, "absent.txt", tmp_path / "download") is None


def test_an_artifact_of_a_run_the_store_lacks_is_an_error_not_none(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with pytest.raises(TrackingError, match=r"^artifact evaluation/note\.txt of run 0+ in MLflow at sqlite:///"):
        tracking.download_artifact("0" * 32, "evaluation/note.txt", tmp_path / "download")


def test_reads_hand_back_the_projects_records_not_mlflow_entities(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp", run_name="parent") as parent:
        tracking.log_params({"train": {"lr": 0.01}})
        tracking.log_metrics({"val/dice": 0.5})
    with tracking.run("exp", parent_run_id=parent.run_id, tags={"optuna.trial_number": 3}) as child:
        pass
    assert isinstance(parent, tracking.ActiveRun)
    found = tracking.get_run(parent.run_id)
    assert isinstance(found, tracking.RunSummary)
    assert (found.name, found.status, found.params, found.metrics) == (
        "parent",
        "FINISHED",
        {"train.lr": "0.01"},
        {"val/dice": 0.5},
    )
    assert found.parent_run_id is None
    assert tracking.get_run(child.run_id).parent_run_id == parent.run_id
    assert tracking.get_run(child.run_id).tags[tracking.names.OPTUNA_TRIAL_NUMBER] == "3"


def test_a_run_the_store_lacks_is_one_line_naming_it(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with pytest.raises(TrackingError, match=r"^run 0+ in MLflow at sqlite:///.*mlflow\.db: .*not found") as error:
        tracking.get_run("0" * 32)
    assert "\n" not in str(error.value)
