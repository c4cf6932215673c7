from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from patchunet import tracking
from patchunet.errors import PatchUNetError


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert tracking.flatten({"train": {"lr": 0.1, "early": {"patience": 3}}, "seed": 1}) == {
        "train.lr": 0.1,
        "train.early.patience": 3,
        "seed": 1,
    }


def test_tracking_uri_prefers_env_then_params_then_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == "sqlite:///mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "http://127.0.0.1:5000"


def test_unreachable_server_fails_at_once_with_one_line() -> None:
    with pytest.raises(PatchUNetError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable"):
        tracking.connect("http://127.0.0.1:9")


def test_sqlite_file_names_the_database_of_sqlite_uris_only() -> None:
    assert tracking.sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert tracking.sqlite_file("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert tracking.sqlite_file("http://127.0.0.1:5000") is None


def test_read_helpers_against_a_real_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.registered_aliases("nothing-here") == {}
    assert tracking.experiment_runs("no-such-experiment") == []
    (tmp_path / "note.txt").write_text("hello")
    with tracking.run("exp", run_name="first") as active:
        for step, value in [(1, 0.5), (0, 0.25), (2, 0.75)]:
            tracking.log_metrics({"val/dice": value}, step=step)
        tracking.log_artifact(tmp_path / "note.txt", artifact_path="evaluation")
    run_id = active.info.run_id
    with tracking.run("exp", run_name="second"):
        pass

    assert tracking.metric_history(run_id, "val/dice") == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert tracking.metric_history(run_id, "val/loss") == []
    assert [r.info.run_name for r in tracking.experiment_runs("exp")] == ["second", "first"]
    copied = tracking.download_artifact(run_id, "evaluation/note.txt", tmp_path / "download")
    assert copied is not None and copied.read_text() == "hello"
    assert tracking.download_artifact(run_id, "evaluation/absent.txt", tmp_path / "download") is None

    client = MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", f"runs:/{run_id}/evaluation", run_id=run_id)
    tracking.set_alias("m", "champion", 1)
    tracking.set_alias("m", "challenger", 2)
    assert tracking.registered_aliases("m") == {"champion": 1, "challenger": 2}
