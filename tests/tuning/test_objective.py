"""A trial on tiny synthetic images, with real SQLite Optuna and MLflow stores."""

import json
from pathlib import Path

import optuna
from conftest import make_tune_project, mlflow_client

from patchunet import tracking
from patchunet.core.config import TuneConfig, load_params, parse_section
from patchunet.core.locking import exclusive_lock
from patchunet.tuning.objective import Objective, PatchCache
from patchunet.tuning.workers import run_worker


def run_two_trials(project: Path, tmp_path: Path, **study_options) -> tuple[optuna.Study, str]:
    """(study, parent run id) after one worker ran 2 trials of the project's study, in SQLite stores."""
    params = load_params(project / "params.yaml")
    cfg = parse_section(TuneConfig, params, "tune")
    tracking.connect(f"sqlite:///{project / 'mlflow.db'}")
    study = optuna.create_study(storage=f"sqlite:///{project / 'optuna.db'}", direction="maximize", **study_options)
    with tracking.run(cfg.experiment) as parent:
        pass
    split = json.loads((project / "data/interim/split.json").read_text())
    cache = PatchCache(split, project / "data/raw/monuseg/train/images", project / "data/interim/train/labels", None)
    objective = Objective(params, cfg, cache, parent.run_id)
    run_worker(study, objective, n_trials=2, lock=lambda: exclusive_lock(str(tmp_path)), heartbeat=True)
    return study, parent.run_id


def test_pruned_trials_stop_early_and_are_marked_in_optuna_and_mlflow(tmp_path: Path) -> None:
    project = make_tune_project(tmp_path / "project")
    # no Dice reaches 1.1: prune after epoch 1
    study, parent_run_id = run_two_trials(project, tmp_path, pruner=optuna.pruners.ThresholdPruner(lower=1.1))

    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert [len(t.intermediate_values) for t in study.trials] == [1, 1]
    client = mlflow_client(f"sqlite:///{project / 'mlflow.db'}")
    children = client.search_runs([client.get_run(parent_run_id).info.experiment_id], "tags.optuna.state = 'PRUNED'")
    assert len(children) == 2
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/dice")] == [0]


def test_a_trial_whose_loss_diverges_is_pruned_and_the_study_goes_on(tmp_path: Path) -> None:
    """A learning rate the search tries may explode the loss: that trial has no score, and the
    worker goes on to the next instead of ending the study."""
    space = {"train.lr": {"low": 1e5, "high": 1e6, "log": True}, "patch.size": {"choices": [16]}}
    project = make_tune_project(tmp_path / "project", space=space)
    study, _ = run_two_trials(project, tmp_path)

    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
