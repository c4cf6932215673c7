"""Models in MLflow: logging the network as a "model from code", and reading a logged or registered
model back (its weights, its model config), by any model URI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from patchunet.core.errors import TrackingError
from patchunet.tracking.failures import failing_as
from patchunet.tracking.names import MODEL_ARTIFACT, WEIGHTS_ARTIFACT
from patchunet.tracking.run_logging import active_run_subject

if TYPE_CHECKING:
    from patchunet.model.unet import PatchUNet

WEIGHTS_FILE = "patchunet.pt"
PYFUNC_FLAVOR = "python_function"
MODEL_CONFIG_KEY = "config"
"""Where the MLmodel file keeps a pyfunc's `model_config`, under its python_function flavor."""


def image_signature(channels: int = 1) -> ModelSignature:
    """(N, 3, H, W) float32 images in [0, 1] -> (N, channels, H, W) float32 logits, any N, H, W:
    the foreground, then the instance head's channels."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
    )


def log_model(model: PatchUNet, input_example: np.ndarray, **metadata: object) -> str:
    """Log `model` to the active run as an MLflow "model from code"; returns its model URI.

    The model holds `served_model.py` and, as its artifact `weights`, the file of
    `model.save_model` (config and weights as plain data, with `metadata`). MLflow serves it
    without unpickling anything, and `load_logged_model` reads the weights file alone. The
    patchunet package goes along as code, so it serves where patchunet is not installed.
    """
    import mlflow.pyfunc

    import patchunet
    from patchunet.model.heads import output_channels
    from patchunet.model.unet import save_model

    with tempfile.TemporaryDirectory(prefix="patchunet-model-") as folder:
        weights = Path(folder) / WEIGHTS_FILE
        save_model(model, weights, **metadata)
        with failing_as(f"model of {active_run_subject()}"):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=Path(__file__).with_name("served_model.py"),
                artifacts={WEIGHTS_ARTIFACT: str(weights)},
                signature=image_signature(output_channels(model.cfg.instance_head)),
                input_example=input_example,
                code_paths=[str(Path(patchunet.__file__).parent)],
            )
    return info.model_uri


def load_logged_model(model_uri: str) -> PatchUNet:
    """The PatchUNet of a logged or registered model, on the CPU in eval mode: `models:/name@alias`,
    `models:/name/3`, `runs:/<run id>/model` or `models:/<model id>`.

    Reads only the model's weights file, as plain data; never unpickles, never runs its code.
    """
    import mlflow.artifacts
    from mlflow.models import Model

    from patchunet.model.unet import load_model

    with tempfile.TemporaryDirectory(prefix="patchunet-model-") as folder:
        with failing_as(model_uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        try:
            weights = Model.load(local).flavors[PYFUNC_FLAVOR]["artifacts"][WEIGHTS_ARTIFACT]["path"]
        except (MlflowException, OSError, KeyError, TypeError):
            raise TrackingError(
                f"{model_uri}: not a PatchUNet model with a weights file (one logged before weights files "
                "were, or not a model): train again, or pass a model file"
            ) from None
        return load_model(local / weights)


def model_config(model_uri: str) -> dict[str, Any] | None:
    """The `model_config` the pyfunc at `model_uri` was logged with: for the nuclei model that
    `register` logs, the `eval` settings, `window` and `serve` settings it was scored and serves with.

    None, a normal answer, for a model logged without one (the raw network `train` logs, or a
    version registered before `register` logged the nuclei model). Reads the MLmodel file alone.
    """
    from mlflow.models import Model

    with failing_as(model_uri):
        flavors = Model.load(model_uri).flavors
    config = flavors.get(PYFUNC_FLAVOR, {}).get(MODEL_CONFIG_KEY)
    return dict(config) if config else None
