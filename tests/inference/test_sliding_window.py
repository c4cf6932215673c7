"""Sliding-window inference: exact reproduction by an identity-like model, no seams, any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from patchunet.inference.sliding_window import blending_weights, predict_probabilities


class ProbabilityPassThrough(nn.Module):
    """Returns the logit of the red channel: the blended probabilities must equal red / 255."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return torch.logit(x[:, :1])


class Constant(nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.logit)


def smooth_random_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Red channel in [10, 245], so its logit is finite; any structure would show a seam."""
    rng = np.random.default_rng(seed)
    return rng.integers(10, 246, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(128, 128), (150, 205), (40, 27)])  # divides, does not, smaller
@pytest.mark.parametrize("blend", ["gaussian", "linear"])
@pytest.mark.parametrize("tta", [False, True])
def test_an_identity_like_model_is_reproduced_exactly(shape, blend, tta) -> None:
    image = smooth_random_image(shape)
    probabilities = predict_probabilities(
        ProbabilityPassThrough(), image, window=64, overlap=16, batch_size=3, blend=blend, tta=tta
    )
    assert probabilities.shape == shape and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, image[..., 0] / 255.0, rtol=0, atol=1e-5)


class WindowRamp(nn.Module):
    """Depends on where a pixel sits in its window, as a real net does near window edges:
    probability 0.3 at a window's left edge rising to 0.7 at its right edge, on any image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.3, 0.7, x.shape[-1])
        return torch.logit(ramp).expand(x.shape[0], 1, *x.shape[-2:]).clone()


def test_blending_leaves_no_step_where_windows_meet() -> None:
    # stitching windows side by side would jump by 0.4 at each border; blending must smooth it
    # to at most a tenth of that (linear: no more than the ramp's own step of 0.4 / 63)
    image = np.full((64, 400, 3), 128, np.uint8)
    for blend, bound in (("gaussian", 0.04), ("linear", 1.01 * 0.4 / 63)):
        probabilities = predict_probabilities(WindowRamp(), image, window=64, overlap=32, batch_size=4, blend=blend)
        assert np.abs(np.diff(probabilities, axis=1)).max() < bound, blend


def test_a_constant_model_gives_a_constant_map() -> None:
    probabilities = predict_probabilities(
        Constant(1.5), smooth_random_image((100, 130)), window=32, overlap=8, batch_size=5, tta=True
    )
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-1.5)), atol=1e-6)


def test_windows_go_through_in_batches_of_at_most_batch_size() -> None:
    model = ProbabilityPassThrough()
    predict_probabilities(model, smooth_random_image((200, 200)), window=64, overlap=16, batch_size=4)
    assert max(model.batch_sizes) == 4 and len(model.batch_sizes) > 1


def test_overlap_must_be_smaller_than_the_window() -> None:
    with pytest.raises(ValueError, match="overlap 64"):
        predict_probabilities(Constant(0), smooth_random_image((64, 64)), window=64, overlap=64, batch_size=1)


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_blending_weights_peak_in_the_centre_and_stay_positive(blend) -> None:
    weights = blending_weights(64, blend)
    assert weights.shape == (64, 64) and weights.min() > 0
    assert weights[32, 32] > weights[32, 5] > weights[32, 0]
    np.testing.assert_allclose(weights, weights.T)


def test_peak_memory_is_two_float32_maps_plus_a_uint8_copy() -> None:
    """Sum and weights as float32, the image padded as uint8, the quotient computed in place."""
    import tracemalloc

    image = smooth_random_image((400, 400))
    tracemalloc.start()
    try:
        predict_probabilities(Constant(0.0), image, window=64, overlap=16, batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    padded_map = 416 * 416 * 4
    assert peak < 3.25 * padded_map
