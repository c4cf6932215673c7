from pathlib import Path

import optuna
from conftest import REPO_ROOT

from patchunet.core.config import Dimension, TuneConfig, load_params, parse_section
from patchunet.tuning.study import claim_worker_index, enqueue_defaults, load_study, study_lock


def test_the_params_yaml_values_are_the_first_trial_of_a_new_study(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    dimensions = [Dimension("train.lr", low=1e-4, high=1e-2, log=True), Dimension("patch.size", choices=(128, 256))]
    params = {"train": {"lr": 1e-3}, "patch": {"size": 256, "stride": 256}}
    assert not enqueue_defaults(study, dimensions, {"train": {"lr": 1.0}, "patch": {"size": 256}})  # outside
    assert enqueue_defaults(study, dimensions, params)
    trial = study.ask()
    assert trial.params == {} and trial.suggest_float("train.lr", 1e-4, 1e-2, log=True) == 1e-3
    assert trial.suggest_categorical("patch.size", [128, 256]) == 256
    assert not enqueue_defaults(study, dimensions, params)  # the study has trials now


def test_a_study_is_loaded_not_recreated(tmp_path: Path) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    cfg = parse_section(
        TuneConfig, {**params, "tune": {**params["tune"], "storage": f"sqlite:///{tmp_path}/o.db"}}, "tune"
    )
    first = load_study(cfg)
    first.set_user_attr("marker", 1)
    assert load_study(cfg, worker_index=1).user_attrs["marker"] == 1


def test_each_worker_claims_its_own_index(tmp_path: Path) -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    cfg = parse_section(
        TuneConfig, {**params, "tune": {**params["tune"], "storage": f"sqlite:///{tmp_path}/o.db"}}, "tune"
    )
    lock = study_lock(cfg)
    assert [claim_worker_index(load_study(cfg), lock) for _ in range(3)] == [0, 1, 2]
