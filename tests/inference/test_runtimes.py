"""The network on ONNX Runtime and OpenVINO gives what torch gives, and is exported once per weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from patchunet.core.config import EvalConfig, ModelConfig, load_params, parse_section
from patchunet.core.errors import ConfigError
from patchunet.inference import runtimes
from patchunet.inference.sliding_window import segment_image
from patchunet.model.unet import PatchUNet

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL = dataclasses.replace(  # the plain torch run each runtime is compared with
    parse_section(EvalConfig, load_params(REPO_ROOT / "params.yaml"), "eval"), backend="torch", precision="fp32"
)


@pytest.fixture(scope="module")
def model() -> PatchUNet:
    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=4, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    model = PatchUNet(cfg)
    for module in model.modules():  # running statistics that are not the identity, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "patchunet" / "onnx"


@pytest.mark.parametrize(
    ("backend", "precision", "tolerance"), [("onnxruntime", "fp32", 1e-4), ("openvino", "fp32", 1e-4)]
)
def test_an_exported_network_gives_torchs_logits_for_any_batch_and_size(model, cache, backend, precision, tolerance):
    network = runtimes.runtime_network(model, dataclasses.replace(EVAL, backend=backend, precision=precision))
    for shape in ((1, 3, 32, 32), (3, 3, 48, 80)):
        images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            expected = model(images)
        assert network.cfg == model.cfg
        torch.testing.assert_close(network(images), expected, atol=tolerance, rtol=0)


def test_openvino_bf16_stays_close_to_torch(model, cache) -> None:
    """bfloat16 keeps 8 bits of mantissa: logits agree to a few hundredths, not to float precision."""
    network = runtimes.runtime_network(model, dataclasses.replace(EVAL, backend="openvino", precision="bf16"))
    images = torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(images)
    assert (network(images) - expected).abs().max() < 0.1


def test_segmenting_with_onnxruntime_gives_torchs_labels(model, cache) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    cfg = dataclasses.replace(EVAL, overlap=8, threshold=0.5, min_nucleus_area=4)
    _, expected = segment_image(model, image, cfg, 32)
    network = runtimes.runtime_network(model, dataclasses.replace(cfg, backend="onnxruntime"))
    _, labels = segment_image(network, image, cfg, 32)
    np.testing.assert_array_equal(labels, expected)


def test_the_export_is_made_once_per_weights_and_kept_in_the_cache(model, cache) -> None:
    first = runtimes.cached_onnx(model)
    assert first.parent == cache and first.is_file()
    made = first.stat().st_mtime_ns
    assert runtimes.cached_onnx(model) == first and first.stat().st_mtime_ns == made
    other = PatchUNet(model.cfg).eval()
    assert runtimes.cached_onnx(other) != first


def test_the_export_key_changes_with_the_torch_version_and_opset(model, monkeypatch) -> None:
    key = runtimes.export_key(model)
    monkeypatch.setattr(runtimes, "ONNX_OPSET", runtimes.ONNX_OPSET + 1)
    assert runtimes.export_key(model) != key
    monkeypatch.undo()
    monkeypatch.setattr(runtimes.torch, "__version__", "0.0.0")
    assert runtimes.export_key(model) != key


def test_torch_is_the_model_itself_and_bf16_needs_openvino(model) -> None:
    assert runtimes.runtime_network(model, EVAL) is model
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(ConfigError, match=r"eval.precision: bf16 runs on eval.backend openvino only"):
            runtimes.runtime_network(model, dataclasses.replace(EVAL, backend=backend, precision="bf16"))


def test_an_unknown_backend_is_refused_by_the_params(model) -> None:
    with pytest.raises(ConfigError, match=r"eval.backend"):
        dataclasses.replace(EVAL, backend="tensorrt")


def test_an_openvino_network_serves_several_threads_at_once(model, cache) -> None:
    """The dashboard's sessions share one network from threads; each gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    network = runtimes.runtime_network(model, dataclasses.replace(EVAL, backend="openvino", precision="fp32"))
    batches = [torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(seed)) for seed in range(8)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(network, batches))
    with torch.inference_mode():
        for images, answer in zip(batches, answers, strict=True):
            torch.testing.assert_close(answer, model(images), atol=1e-4, rtol=0)
