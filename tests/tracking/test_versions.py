"""`tracking.versions`: registering a run's model once, and reading its versions back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import connect_to_new_store, tiny_network

from patchunet import tracking
from patchunet.core.errors import TrackingError


@pytest.fixture
def two_logged_runs(tmp_path: Path, monkeypatch) -> tuple[str, str, str, str]:
    """(run a, model a, run b, model b): two runs that each logged a tiny model, none registered."""
    connect_to_new_store(tmp_path, monkeypatch)
    logged = []
    for _ in range(2):
        with tracking.run("exp") as active:
            logged += [active.run_id, tracking.log_model(tiny_network(), np.zeros((1, 3, 8, 8), np.float32))]
    return tuple(logged)


def test_an_unregistered_model_has_no_versions_and_no_aliases(tmp_path: Path, monkeypatch) -> None:
    connect_to_new_store(tmp_path, monkeypatch)
    assert tracking.list_versions("nothing-here") == []
    assert tracking.registered_aliases("nothing-here") == {}


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


def test_a_version_the_registry_lacks_is_one_line_naming_it(two_logged_runs) -> None:
    _, model_a, _, _ = two_logged_runs
    tracking.register_model(model_a, "m", {})
    with pytest.raises(TrackingError, match=r"^model m version 7 in MLflow at sqlite:///.*not found") as error:
        tracking.get_version("m", 7)
    assert "\n" not in str(error.value)


def test_model_cards_are_set_on_the_model_and_the_version(two_logged_runs) -> None:
    from mlflow.tracking import MlflowClient

    _, model_a, _, _ = two_logged_runs
    tracking.register_model(model_a, "m", {})
    tracking.describe("m", "# m", 1, "# m v1")
    client = MlflowClient()
    assert (client.get_registered_model("m").description, client.get_model_version("m", "1").description) == (
        "# m",
        "# m v1",
    )
