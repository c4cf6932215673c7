import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from patchunet import tracking
from patchunet.core.errors import PatchUNetError, TrackingError


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
    run_id = active.run_id
    with tracking.run("exp", run_name="second"):
        pass

    assert tracking.metric_history(run_id, "val/dice") == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert tracking.metric_history(run_id, "val/loss") == []
    assert [r.name for r in tracking.experiment_runs("exp")] == ["second", "first"]
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
    assert [(v.version, v.run_id, v.aliases) for v in tracking.list_versions("m")] == [
        (2, run_id, ("challenger",)),
        (1, run_id, ("champion",)),
    ]
    assert tracking.version_by_alias("m", "champion").version == 1
    assert tracking.version_by_alias("m", "nobody") is None


def test_an_unsupported_scheme_is_one_line() -> None:
    with pytest.raises(PatchUNetError, match=r"^MLflow store foo://bar: cannot be used \(") as error:
        tracking.connect("foo://bar")
    assert "\n" not in str(error.value)


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(PatchUNetError, match=r"mlflow\.db: cannot be used \(.*file is not a database") as error:
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
    import multiprocessing

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


def tiny_network():
    import torch

    from patchunet.core.config import ModelConfig
    from patchunet.model.unet import PatchUNet

    torch.manual_seed(0)
    return PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    ).eval()


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory):
    """(uri, run id, model URI, network): a tiny PatchUNet logged, registered as m v1, alias champion."""
    folder = tmp_path_factory.mktemp("logged")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        tracking.connect(uri)
        network = tiny_network()
        with tracking.run("exp") as active:
            model_uri = tracking.log_model(network, np.zeros((1, 3, 8, 8), np.float32), patch_size=32)
        version = tracking.register_model(model_uri, "m", tags={})
        tracking.set_alias("m", "champion", version.version)
    return uri, active.run_id, model_uri, network


def test_a_logged_model_loads_back_from_its_weights_file_by_any_uri(logged_model, monkeypatch) -> None:
    import torch

    uri, run_id, model_uri, network = logged_model
    tracking.connect(uri)
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    for reference in ("models:/m@champion", "models:/m/1", f"runs:/{run_id}/model", model_uri):
        loaded = tracking.load_logged_model(reference)
        with torch.no_grad():
            assert torch.equal(loaded(x), network(x)), reference


def test_a_logged_model_is_served_as_a_pyfunc_with_its_signature(logged_model) -> None:
    import mlflow.pyfunc
    import torch

    uri, _, _, network = logged_model
    tracking.connect(uri)
    served = mlflow.pyfunc.load_model("models:/m@champion")
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    logits = served.predict(x)
    with torch.no_grad():
        assert np.array_equal(logits, network(torch.from_numpy(x)).numpy())
    assert served.predict(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 1, 32, 32)
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 3, -1, -1)


def test_a_model_uri_that_resolves_to_nothing_is_one_line(logged_model, tmp_path: Path) -> None:
    uri, run_id, _, _ = logged_model
    tracking.connect(uri)
    with pytest.raises(PatchUNetError, match=r"^models:/m@nobody: no such model in") as error:
        tracking.load_logged_model("models:/m@nobody")
    assert "\n" not in str(error.value)
    with tracking.run("exp", run_id=run_id):
        (tmp_path / "note.txt").write_text("not a model")
        tracking.log_artifact(tmp_path / "note.txt", artifact_path="notes")
    with pytest.raises(PatchUNetError, match="not a PatchUNet model with a weights file"):
        tracking.load_logged_model(f"runs:/{run_id}/notes")


def finished_process_id() -> int:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_run_whose_process_is_gone_is_failed_at_the_next_start(tmp_path: Path, monkeypatch) -> None:
    import json
    import socket

    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
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


def test_reads_hand_back_the_projects_records_not_mlflow_entities(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
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


def test_a_store_that_fails_a_read_raises_the_projects_error(tmp_path: Path, monkeypatch) -> None:
    """The dashboard catches PatchUNetError alone: an MLflow failure must arrive as one."""
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "mlflow.db").write_bytes(b"no longer a database" * 100)  # as a store that breaks while in use
    with pytest.raises(TrackingError, match=r"^MLflow at sqlite:///.*mlflow\.db: .*file is not a database") as error:
        tracking.list_versions("m")
    assert isinstance(error.value, PatchUNetError) and "\n" not in str(error.value)


@pytest.fixture
def two_logged_runs(tmp_path: Path, monkeypatch) -> tuple[str, str, str, str]:
    """(run a, model a, run b, model b): two runs that each logged a tiny model, none registered."""
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = []
    for _ in range(2):
        with tracking.run("exp") as active:
            logged += [active.run_id, tracking.log_model(tiny_network(), np.zeros((1, 3, 8, 8), np.float32))]
    return tuple(logged)


def test_registering_a_run_makes_one_version_tagged_from_the_start(two_logged_runs) -> None:
    run_a, model_a, run_b, model_b = two_logged_runs
    first = tracking.register_run_model("m", run_a, model_a, {"test_aji": 0.61234, "eval_params": "abc"})
    assert (first.version, first.run_id, first.scores, first.eval_protocol) == (1, run_a, {"aji": 0.61234}, "abc")
    second = tracking.register_run_model("m", run_b, model_b, {"test_aji": 0.5})
    assert second.version == 2 and [v.version for v in tracking.list_versions("m")] == [2, 1]


def test_registering_a_run_again_retags_its_version_instead_of_adding_one(two_logged_runs) -> None:
    """As `register` finds a store of the old order, where training registered the version untagged."""
    run_a, model_a, _, _ = two_logged_runs
    made_at_training = tracking.register_model(model_a, "m", {"lr": 0.01})
    again = tracking.register_run_model("m", run_a, model_a, {"test_aji": 0.6, "eval_params": "abc"})
    assert again.version == made_at_training.version == 1
    assert again.tags == {"lr": "0.01", "test_aji": "0.6", "eval_params": "abc"}
    assert tracking.register_run_model("m", run_a, model_a, {"test_aji": 0.7}).scores == {"aji": 0.7}
    assert [v.version for v in tracking.list_versions("m")] == [1]


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
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
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
    monkeypatch.chdir(tmp_path)
    tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracking.run("exp") as active:
        pass
    tags = tracking.get_run(active.run_id).tags
    assert tracking.names.DVC_EXPERIMENT not in tags and tracking.names.DVC_BASELINE_REV not in tags
