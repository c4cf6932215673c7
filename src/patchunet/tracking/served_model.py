"""The registered model as MLflow loads and serves it: a "model from code".

`tracking.log_model` logs this file with the weights file of `model.save_model` as its artifact
`weights`. MLflow runs the file to load the model (`mlflow.pyfunc.load_model`,
`mlflow models serve`), and the weights load as plain data (`weights_only`): nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext

from patchunet.model.unet import load_model
from patchunet.tracking.names import WEIGHTS_ARTIFACT


class ServedPatchUNet(PythonModel):
    """(N, 3, H, W) float32 images in [0, 1] -> (N, C, H, W) float32 logits (the foreground, then the
    instance head's channels); H, W divisible by 2**depth."""

    def load_context(self, context: PythonModelContext) -> None:
        self.network = load_model(Path(context.artifacts[WEIGHTS_ARTIFACT]))

    def predict(self, context: PythonModelContext, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        with torch.inference_mode():
            return self.network(torch.from_numpy(np.asarray(model_input, np.float32))).numpy()


mlflow.models.set_model(ServedPatchUNet())
