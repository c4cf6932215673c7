"""`tracking.store`: which store the project uses, and connecting to it, failing at once in one line."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from patchunet import tracking
from patchunet.core.errors import TrackingError


def test_tracking_uri_prefers_env_then_params_then_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None) == "sqlite:///mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri("sqlite:///other.db") == "http://127.0.0.1:5000"


def test_sqlite_file_names_the_database_of_sqlite_uris_only() -> None:
    assert tracking.sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert tracking.sqlite_file("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert tracking.sqlite_file("http://127.0.0.1:5000") is None


def test_unreachable_server_fails_at_once_with_one_line() -> None:
    with pytest.raises(TrackingError, match=r"MLflow tracking server http://127\.0\.0\.1:9 is unreachable"):
        tracking.connect("http://127.0.0.1:9")


def test_an_unsupported_scheme_is_one_line() -> None:
    with pytest.raises(TrackingError, match=r"^MLflow store foo://bar: cannot be used \(") as error:
        tracking.connect("foo://bar")
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(TrackingError, match=r"mlflow\.db: cannot be used \(.*file is not a database") as error:
        tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "\n" not in str(error.value)


def start_a_run_when_all_are_ready(uri: str, ready, errors) -> None:
    """In a child process: wait for the others, then connect to `uri` and log one run."""
    ready.wait()
    try:
        tracking.connect(uri)
        with tracking.run("race"):
            tracking.log_metrics({"x": 1.0})
    except BaseException as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None


@pytest.mark.parametrize("attempt", range(2))
def test_runs_starting_at_once_on_a_new_sqlite_store_all_succeed(tmp_path: Path, monkeypatch, attempt: int) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    context = multiprocessing.get_context("fork")  # no re-import per child: they start together
    ready, errors = context.Barrier(3), context.Queue()
    children = [context.Process(target=start_a_run_when_all_are_ready, args=(uri, ready, errors)) for _ in range(3)]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join(timeout=300)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
    failures = [errors.get(timeout=5) for child in children if child.exitcode != 0]
    assert not failures, failures
    tracking.connect(uri)  # and the store still works
    assert len(tracking.experiment_runs("race")) == 3


# --- DVC experiments: `dvc exp run` sets DVC_ROOT, DVC_EXP_NAME and DVC_EXP_BASELINE_REV for every stage ---


def as_a_queued_dvc_experiment_stage(root: Path, monkeypatch: pytest.MonkeyPatch, name: str = "lr-low") -> Path:
    """Work in a temporary copy of `root` as `dvc exp run --queue` runs a stage there; returns the copy."""
    copy = root / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("DVC_EXP_NAME", name)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abcd" * 5)
    return copy


def test_a_queued_experiments_relative_sqlite_store_is_the_dvc_roots(tmp_path: Path, monkeypatch) -> None:
    as_a_queued_dvc_experiment_stage(tmp_path, monkeypatch)
    assert tracking.resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert (
        tracking.resolve_tracking_uri("sqlite:///stores/other.db") == f"sqlite:///{tmp_path.resolve()}/stores/other.db"
    )


def test_absolute_and_server_uris_are_kept_in_a_queued_experiment(tmp_path: Path, monkeypatch) -> None:
    as_a_queued_dvc_experiment_stage(tmp_path, monkeypatch)
    assert tracking.resolve_tracking_uri("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri(None) == "http://127.0.0.1:5000"


def test_a_stage_run_in_the_dvc_root_keeps_the_relative_uri(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # `dvc repro`, and `dvc exp run` in the workspace
    assert tracking.resolve_tracking_uri(None) == "sqlite:///mlflow.db"
