"""The tune stage in process, on tiny synthetic images: real SQLite storage, real MLflow stores."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import make_tune_project, mlflow_client, params_changed, run_in_process, update_params

from patchunet.core.errors import PatchUNetError
from patchunet.stages.tune import TuneSummary, shown_storage
from patchunet.tuning.study import open_storage


def tune(project: Path, **options: object) -> TuneSummary:
    """The stage on `project`, from inside it: `tune.storage` is a URL relative to the working folder."""
    with pytest.MonkeyPatch.context() as env:
        env.chdir(project)
        return run_in_process("tune", project, f"sqlite:///{project / 'mlflow.db'}", **options)


def child_runs(project: Path) -> tuple[list, list]:
    """(child runs, parent runs) of the experiment patchunet-tune in the project's MLflow store."""
    client = mlflow_client(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("patchunet-tune").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return children, [r for r in runs if r not in children]


def stored_study(project: Path, storage: str = "sqlite:///optuna.db") -> optuna.Study:
    """The study as the project's storage holds it (relative paths taken from the project)."""
    url = storage.replace("sqlite:///", f"sqlite:///{project}/").replace("journal:", f"journal:{project}/")
    return optuna.load_study(study_name="patchunet-lr-patch", storage=open_storage(url))


@pytest.fixture(scope="module")
def studied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-trial study in SQLite storage, run by the stage script (no pruning: see the pruning test)."""
    project = make_tune_project(tmp_path_factory.mktemp("tune") / "project", pruner="none")
    summary = tune(project)
    assert summary.states == ["COMPLETE"] * 3
    return project


def test_study_holds_three_trials_inside_their_ranges(studied: Path) -> None:
    study = stored_study(studied)
    assert len(study.trials) == 3
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert 1e-3 <= trial.params["train.lr"] <= 1e-2
        assert trial.params["patch.size"] in (16, 32)
        assert len(trial.intermediate_values) == 2  # val Dice reported every epoch


def test_best_params_and_trials_table_are_written(studied: Path) -> None:
    best = yaml.safe_load((studied / "reports/tune/best_params.yaml").read_text())
    size = best["params"]["patch"]["size"]
    assert best["params"]["patch"]["stride"] == size and 1e-3 <= best["params"]["train"]["lr"] <= 1e-2
    assert best["apply"].startswith("dvc exp run -S patch.size=") and f"-S patch.stride={size}" in best["apply"]
    with (studied / "reports/tune/trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["number"] for row in rows] == ["0", "1", "2"] and {row["state"] for row in rows} == {"COMPLETE"}
    assert {p.name for p in (studied / "reports/tune/figures").iterdir()} >= {
        "optimization_history.html",
        "optimization_history.png",
        "contour.html",
        "contour.png",
    }


def test_one_parent_run_with_a_child_run_per_trial(studied: Path) -> None:
    children, parents = child_runs(studied)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    study = stored_study(studied)
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for trial in study.trials:
        child = by_number[trial.number]
        assert float(child.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert child.data.params["patch.size"] == str(trial.params["patch.size"])
        assert child.data.tags["optuna.state"] == "COMPLETE"
        assert child.data.metrics["objective/val_dice"] == pytest.approx(trial.value)
    assert parent.data.metrics["best/val_dice"] == pytest.approx(study.best_value)
    assert parent.data.metrics["trials/complete"] == 3


def test_rerunning_with_more_trials_adds_only_the_missing_ones(studied: Path, capsys: pytest.CaptureFixture) -> None:
    update_params(studied, tune={"n_trials": 5})
    tune(studied)
    assert "holds 3 of 5 trials" in capsys.readouterr().out
    study = stored_study(studied)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    children, parents = child_runs(studied)
    assert len(parents) == 1 and len(children) == 5  # the same parent run goes on


def test_a_study_is_not_continued_under_other_settings(studied: Path) -> None:
    with params_changed(studied, train={"batch_size": 2}), pytest.raises(PatchUNetError) as refused:
        tune(studied)
    assert "study patchunet-lr-patch was run with other" in str(refused.value)


def test_sqlite_storage_refuses_several_workers(tmp_path: Path) -> None:
    project = make_tune_project(tmp_path / "project")
    with pytest.raises(PatchUNetError) as refused:
        tune(project, workers=2)
    assert "params.yaml tune.storage: sqlite:///optuna.db cannot serve 2 worker processes" in str(refused.value)


def test_bad_search_space_stops_the_stage_in_one_line(tmp_path: Path) -> None:
    project = make_tune_project(tmp_path / "project")
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}, "patch.size": {"choices": [16, 128]}}
    update_params(project, tune={"space": space})
    with pytest.raises(PatchUNetError) as refused:
        tune(project)
    assert str(refused.value) == "params.yaml tune.space.patch.size: 128 is larger than the images (64 px)"


def test_a_storage_url_is_shown_without_its_password() -> None:
    shown = shown_storage("postgresql+psycopg2://patchunet:s3cret@127.0.0.1:5432/optuna")
    assert shown == "postgresql+psycopg2://patchunet:***@127.0.0.1:5432/optuna"
    assert shown_storage("journal:reports/tune/journal.log") == "journal:reports/tune/journal.log"
