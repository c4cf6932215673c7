"""The model `register` logs beside the raw network and registers: images in, nuclei out.

Its own module, imported by `register` alone: the model it logs runs served_nuclei.py, which
imports the inference package, and the stages that only log runs must not depend on that.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema

from patchunet.tracking.logged_models import WEIGHTS_FILE
from patchunet.tracking.names import NUCLEI_MODEL_ARTIFACT, ONNX_ARTIFACT, WEIGHTS_ARTIFACT

if TYPE_CHECKING:
    from patchunet.model.unet import PatchUNet


def nuclei_signature(model_mpp: float) -> ModelSignature:
    """Images in an `image` column (arrays, or PNG/TIFF bytes or base64), and their µm per pixel as
    the param `mpp`, by default the model's."""
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec

    from patchunet.serving.requests import IMAGE_COLUMN, MPP_PARAM

    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
        params=ParamSchema([ParamSpec(MPP_PARAM, "double", model_mpp)]),
    )


def log_nuclei_model(
    run_id: str,
    model: PatchUNet,
    eval_settings: Mapping[str, Any],
    window: int,
    serve_settings: Mapping[str, Any],
) -> str:
    """Log to run `run_id`, beside its raw network, the model that returns nuclei
    (served_nuclei.py): the network's weights file and ONNX export, and a model config of the
    `eval_settings`, `window` and `serve_settings` (params.yaml `serve`) it serves with.

    Its input example is a dict of columns, so its serving example is an `{"inputs": {"image": [...]}}`
    request, which the model answers; MLflow checks it by running the model on it. Returns its model URI."""
    import base64
    import io

    import mlflow.pyfunc
    from PIL import Image

    import patchunet
    from patchunet.inference.runtimes import cached_onnx
    from patchunet.model.unet import save_model
    from patchunet.serving.requests import IMAGE_COLUMN

    example = io.BytesIO()  # a 64x64 pink tile: what a client sends, small enough to run at logging
    Image.fromarray(np.full((64, 64, 3), (222, 160, 200), np.uint8)).save(example, format="PNG")
    with tempfile.TemporaryDirectory(prefix="patchunet-model-") as folder, mlflow.start_run(run_id=run_id):
        weights = Path(folder) / WEIGHTS_FILE
        save_model(model, weights)
        network = Path(folder) / "network.onnx"
        shutil.copyfile(cached_onnx(model), network)  # the export evaluate made of these weights, if any
        info = mlflow.pyfunc.log_model(
            name=NUCLEI_MODEL_ARTIFACT,
            python_model=Path(__file__).with_name("served_nuclei.py"),
            artifacts={WEIGHTS_ARTIFACT: str(weights), ONNX_ARTIFACT: str(network)},
            model_config={"eval": dict(eval_settings), "window": window, "serve": dict(serve_settings)},
            signature=nuclei_signature(model.cfg.microns_per_pixel),
            input_example={IMAGE_COLUMN: [base64.b64encode(example.getvalue()).decode("ascii")]},
            code_paths=[str(Path(patchunet.__file__).parent)],
        )
    return info.model_uri
