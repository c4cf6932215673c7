"""Sliding-window inference: exact reproduction by an identity-like model, no seams, any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from patchunet.inference.sliding_window import blending_weights, predict_maps, predict_probabilities


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


class RedWithWindowRamp(nn.Module):
    """Red / 255 times a ramp across the window: blending shows which windows ran at a pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.5, 1.0, x.shape[-1])
        return torch.logit((x[:, :1] * ramp).clamp(1e-4, 1 - 1e-4))


def test_windows_without_a_needed_pixel_are_skipped_and_leave_zeros() -> None:
    image = smooth_random_image((200, 200))
    needed = np.zeros((200, 200), bool)
    needed[20:40, 30:60] = True  # tissue in one corner, the rest glass
    # windows of 64 every 48 px over the image padded by 8: the ones at image rows -8..56 and
    # columns -8..56 and 40..104 hold the tissue; the next start at row 40 and column 88
    options = {"window": 64, "overlap": 16, "batch_size": 4}
    model = ProbabilityPassThrough()
    predict_maps(model, image, **options, needed=needed)
    assert model.batch_sizes == [2]
    full = predict_maps(RedWithWindowRamp(), image, **options)
    skipped = predict_maps(RedWithWindowRamp(), image, **options, needed=needed)
    assert np.array_equal(skipped[:, :40, :88], full[:, :40, :88])  # every window over these pixels ran
    assert not np.array_equal(skipped[:, 40:56, :88], full[:, 40:56, :88])  # blended from fewer windows
    assert (skipped[:, 56:, :] == 0).all() and (skipped[:, :, 104:] == 0).all()  # no window ran here
    assert (skipped[:, :56, :104] > 0).all()


def test_with_no_needed_pixel_one_window_still_runs() -> None:
    model = ProbabilityPassThrough()
    maps = predict_maps(
        model, smooth_random_image((100, 100)), window=64, overlap=16, batch_size=4, needed=np.zeros((100, 100), bool)
    )
    assert model.batch_sizes == [1] and maps.shape == (1, 100, 100)
