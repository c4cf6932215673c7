"""`tracking.run_logging`: what a run block logs arrives in its run, params flattened."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import connect_to_new_store

from patchunet import tracking
from patchunet.core.errors import TrackingError


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert tracking.flatten({"train": {"lr": 0.1, "early": {"patience": 3}}, "seed": 1}) == {
        "train.lr": 0.1,
        "train.early.patience": 3,
        "seed": 1,
    }


def test_params_metrics_and_tags_land_in_the_active_run(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp") as active:
        tracking.log_params({"train": {"lr": 0.01}})
        tracking.log_metrics({"val/dice": 0.5}, step=0)
        tracking.set_tags({"note": 3})
    found = tracking.get_run(active.run_id)
    assert (found.params, found.metrics, found.tags["note"]) == ({"train.lr": "0.01"}, {"val/dice": 0.5}, "3")


def test_a_param_the_store_refuses_is_one_line_naming_the_run(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    with tracking.run("exp") as active:
        tracking.log_params({"lr": 0.01})
        with pytest.raises(TrackingError, match=rf"^params of run {active.run_id} in MLflow at sqlite:///") as error:
            tracking.log_params({"lr": 0.02})  # MLflow params are written once
    assert "\n" not in str(error.value)
