"""The registered model as MLflow loads and serves it: images in, nuclei out (a "model from code").

`serving.nuclei_model.log_nuclei_model` logs this file with two artifacts, the network's weights file
(`weights`, read as plain data with `weights_only`) and its ONNX export (`onnx`), and a model
config holding the `eval` settings, the window and the largest image side of its registration.
So `mlflow.pyfunc.load_model("models:/patchunet@champion").predict(...)` and `mlflow models serve`
give what `patchunet predict` writes: the same labels, and the same table of nuclei.

Input: a DataFrame whose `image` column holds, per row, an RGB uint8 array or PNG/TIFF bytes (or
their base64, as JSON carries them); the param `mpp` gives the images' µm per pixel (default:
the model's). Output: one dict per image: `labels` (an array, or base64 TIFF for bytes, see
serving/requests.py), `nuclei` (one record per nucleus, the nucleus table of postprocess/nuclei.py) and
`microns_per_pixel`. A bad image or param, or a request over the `serve` limits of its
registration (images per request, pixels on a side at the model's scale), is refused before any
work, in one line naming it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

from patchunet.core.config import EvalConfig, ServeConfig
from patchunet.core.errors import PatchUNetError
from patchunet.inference.nuclei import segment_nuclei
from patchunet.inference.runtimes import runtime_network
from patchunet.io.scale import check_scale
from patchunet.model.unet import load_model
from patchunet.postprocess.nuclei import nucleus_table
from patchunet.serving.requests import MPP_PARAM, encoded_labels, request_image, request_mpp, request_values
from patchunet.tracking.names import ONNX_ARTIFACT, WEIGHTS_ARTIFACT


class ServedNuclei(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config
        self.cfg = EvalConfig(**config["eval"])
        self.window = int(config["window"])
        self.serve = ServeConfig(**config["serve"])
        model = load_model(Path(context.artifacts[WEIGHTS_ARTIFACT]))
        self.network = runtime_network(model, self.cfg, onnx_file=Path(context.artifacts[ONNX_ARTIFACT]))

    def predict(self, context: PythonModelContext, model_input, params: dict | None = None) -> list[dict]:
        """`model_input`: a pandas DataFrame, or a dict of columns, as MLflow hands them over."""
        model_mpp = self.network.cfg.microns_per_pixel
        max_side = self.serve.max_image_side
        try:
            values = request_values(model_input, self.serve.max_images)
            mpp = request_mpp(params, model_mpp)
            check_scale((1, 1), mpp, model_mpp, f"params {MPP_PARAM}")  # the scales' ratio, before any image is read
            images = [request_image(value, f"image {i}", max_side, mpp, model_mpp) for i, value in enumerate(values)]
            for i, image in enumerate(images):
                check_scale(image.shape, mpp, model_mpp, f"image {i}")
        except PatchUNetError as exc:  # MLflow answers 400 with this line
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        answers = []
        for value, image in zip(values, images, strict=True):
            labels, probabilities = segment_nuclei(self.network, image, self.cfg, self.window, mpp)
            answers.append(
                {
                    "labels": labels if isinstance(value, np.ndarray) else encoded_labels(labels),
                    "nuclei": nucleus_table(labels, mpp, probabilities, image),
                    "microns_per_pixel": mpp,
                }
            )
        return answers


mlflow.models.set_model(ServedNuclei())
