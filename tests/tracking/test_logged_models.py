"""`tracking.logged_models`: the network logged as a model, read back by any model URI, and a
model's own config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import connect_to_new_store, tiny_network

from patchunet import tracking
from patchunet.core.errors import TrackingError


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory):
    """(uri, run id, model URI, network): a tiny PatchUNet logged, registered as m v1, alias champion."""
    folder = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as patch:
        uri = connect_to_new_store(folder, patch)
        network = tiny_network()
        with tracking.run("exp") as active:
            model_uri = tracking.log_model(network, np.zeros((1, 3, 8, 8), np.float32), patch_size=32)
        version = tracking.register_model(model_uri, "m", tags={})
        tracking.set_alias("m", "champion", version.version)
    return uri, active.run_id, model_uri, network


def test_a_logged_model_loads_back_from_its_weights_file_by_any_uri(logged_model) -> None:
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
    with pytest.raises(TrackingError, match=r"^models:/m@nobody in MLflow at sqlite:///") as error:
        tracking.load_logged_model("models:/m@nobody")
    assert "\n" not in str(error.value)
    with tracking.run("exp", run_id=run_id):
        (tmp_path / "note.txt").write_text("not a model")
        tracking.log_artifact(tmp_path / "note.txt", artifact_path="notes")
    with pytest.raises(TrackingError, match="not a PatchUNet model with a weights file"):
        tracking.load_logged_model(f"runs:/{run_id}/notes")


def test_the_raw_network_has_no_model_config(logged_model) -> None:
    uri, _, _, _ = logged_model
    tracking.connect(uri)
    assert tracking.model_config("models:/m/1") is None


def test_a_pyfunc_logged_with_a_model_config_hands_it_back(logged_model) -> None:
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    uri, run_id, _, _ = logged_model
    tracking.connect(uri)
    config = {"eval": {"threshold": 0.7}, "window": 64}
    with tracking.run("exp", run_id=run_id):
        info = mlflow.pyfunc.log_model(name="configured", python_model=Echo(), model_config=config)
    assert tracking.model_config(info.model_uri) == config


def test_the_config_of_a_model_the_registry_lacks_is_an_error_not_none(logged_model) -> None:
    uri, _, _, _ = logged_model
    tracking.connect(uri)
    with pytest.raises(TrackingError, match=r"^models:/m/9 in MLflow at sqlite:///.*not found"):
        tracking.model_config("models:/m/9")
