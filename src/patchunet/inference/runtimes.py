"""The network on a CPU runtime: PyTorch itself, ONNX Runtime or OpenVINO (`eval.backend`).

The trained PatchUNet is exported once to ONNX (`export_onnx`: torch's exporter, with any batch,
height and width) and run by the runtime that `eval.backend` names, with `eval.precision`: `fp32`,
or `bf16` on OpenVINO, which runs bfloat16 natively on CPUs with AMX or AVX512-BF16 (on other
AVX-512 CPUs it may emulate it, slower: choose fp32 there) and fp32 without AVX-512. Each runtime
gives a `Network`: (N, 3, H, W) float32 images in [0, 1] to (N, C, H, W) float32 logits, as the
torch module does, so the sliding windows take any of them.

A model file or checkpoint exported here is kept in the user's cache (`onnx_cache_dir`), named by
the hash of its weights, config, network code, torch version and opset (`export_key`), so `patchunet
predict` exports a model once, not at every call; the registered model carries its own export
(`register`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

from patchunet.core.config import EvalConfig, ModelConfig
from patchunet.core.errors import ConfigError
from patchunet.core.files import atomic_file
from patchunet.core.resources import worker_count

if TYPE_CHECKING:
    from patchunet.model.unet import PatchUNet

Backend = Literal["torch", "onnxruntime", "openvino"]
INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_OPSET = 18


class Network(Protocol):
    """What the sliding windows need of a network: its config, and images -> logits on the CPU."""

    cfg: ModelConfig

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class ExportedNetwork:
    """The ONNX export of a PatchUNet, run by ONNX Runtime or OpenVINO on the CPU."""

    def __init__(self, cfg: ModelConfig, backend: Backend, run) -> None:
        self.cfg, self.backend, self._run = cfg, backend, run

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(np.ascontiguousarray(images.numpy(), np.float32)))


def export_onnx(model: PatchUNet, path: Path) -> Path:
    """Write `model` as ONNX to `path` (atomically): logits of images of any batch and size that
    the model takes (sides divisible by 2**depth)."""
    import logging

    example = torch.rand(1, 3, 2 * model.cfg.size_multiple, 2 * model.cfg.size_multiple)
    side = {"n": torch.export.Dim("n", max=4096), "h": torch.export.Dim("h", max=65536)}
    side["w"] = torch.export.Dim("w", max=65536)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its per-step progress lines
    with atomic_file(path) as tmp, torch.inference_mode(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")  # torch.export's own
        torch.onnx.export(
            model.cpu().eval(),
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: side["n"], 2: side["h"], 3: side["w"]},),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def weights_hash(model: torch.nn.Module) -> str:
    """16 hex digits naming the model's weights and buffers, for the export cache."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_key(model: PatchUNet) -> str:
    """16 hex digits naming what an export depends on: the weights, the model config, the code of
    the network (model/unet.py), torch's version (its exporter) and the ONNX opset."""
    import patchunet.model.unet

    digest = hashlib.sha256()
    for part in (weights_hash(model), repr(model.cfg), torch.__version__, str(ONNX_OPSET)):
        digest.update(part.encode() + b"\0")
    digest.update(Path(patchunet.model.unet.__file__).read_bytes())
    return digest.hexdigest()[:16]


def onnx_cache_dir() -> Path:
    """$XDG_CACHE_HOME/patchunet/onnx, or ~/.cache/patchunet/onnx."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "patchunet" / "onnx"


def cached_onnx(model: PatchUNet) -> Path:
    """The ONNX export of `model`, made once per `export_key` and kept in `onnx_cache_dir`.

    Falls back to a temporary file where the cache cannot be written (a read-only home).
    """
    path = onnx_cache_dir() / f"patchunet-{export_key(model)}.onnx"
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(model, path)
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="patchunet-onnx-")) / path.name
        return export_onnx(model, path)


def runtime_network(
    model: PatchUNet,
    cfg: EvalConfig,
    *,
    onnx_file: Path | None = None,
    threads: int | None = None,
) -> Network:
    """`model` on the runtime and precision that `cfg.backend` and `cfg.precision` name, with
    `threads` (default: every CPU this process may use). `onnx_file`: the model's own export, if
    it has one (a registered model's); else one is made or taken from the cache."""
    threads = threads or worker_count()
    if cfg.backend == "torch":
        if cfg.precision != "fp32":
            raise ConfigError("eval.precision", f"{cfg.precision} runs on eval.backend openvino only; use fp32")
        return model.eval()
    onnx_file = onnx_file or cached_onnx(model)
    if cfg.backend == "onnxruntime":
        if cfg.precision != "fp32":
            raise ConfigError("eval.precision", f"{cfg.precision} runs on eval.backend openvino only; use fp32")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        return ExportedNetwork(model.cfg, "onnxruntime", lambda x: session.run(None, {INPUT_NAME: x})[0])
    if cfg.backend == "openvino":
        precision = {"fp32": "f32", "bf16": "bf16"}[cfg.precision]
        compiled = openvino_core().compile_model(
            str(onnx_file), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
        )
        request, busy = compiled.create_infer_request(), threading.Lock()

        def infer(images: np.ndarray) -> np.ndarray:
            with busy:  # one request, not to be shared: the dashboard's sessions run in threads
                return request.infer({0: images})[0].copy()

        infer.compiled = compiled  # the request's model lives as long as the request

        return ExportedNetwork(model.cfg, "openvino", infer)
    raise ConfigError("eval.backend", f"unknown backend {cfg.backend!r}: use torch, onnxruntime or openvino")


@functools.cache
def openvino_core():
    """One OpenVINO Core for the process, alive as long as the models it compiled."""
    import openvino

    return openvino.Core()


def network_device(network: Network) -> torch.device:
    """Where the windows go: the torch module's device; the CPU for an exported network."""
    if isinstance(network, torch.nn.Module):
        return next(network.parameters()).device
    return torch.device("cpu")
