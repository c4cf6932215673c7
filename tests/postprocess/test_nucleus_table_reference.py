"""The nucleus table against scikit-image's regionprops, which it measured with before: the same
rows, to the last digit kept, on label maps full of awkward nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_ellipse
from scipy import ndimage

from benchmarks.perf.nucleus_table_speed import regionprops_nucleus_table
from patchunet.postprocess import nuclei
from patchunet.postprocess.nuclei import nucleus_table


def awkward_labels(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Touching blobs cut by the border, with holes, parts, one-pixel nuclei and gaps in the ids."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for nucleus in range(1, 40):
        ellipse = random_ellipse(rng, shape)
        blob = ellipse <= 1
        if rng.random() < 0.2:  # a hole
            blob &= ellipse > 0.2
        labels[blob] = nucleus * 3  # gaps in the ids
    for nucleus in range(200, 210):  # one-pixel nuclei, and a nucleus of scattered pixels
        labels[rng.integers(shape[0]), rng.integers(shape[1])] = nucleus
    labels[rng.random(shape) < 0.01] = 300
    labels[:2, :] = np.where(rng.random((2, shape[1])) < 0.5, 301, labels[:2, :])  # lines along the border
    labels[:, -1] = 302
    return labels


def salt_and_pepper(seed: int) -> np.ndarray:
    """Pixel noise labels: every contact, hole and part there is."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, size=tuple(rng.integers(2, 40, size=2))).astype(np.uint16)
    labels[rng.random(labels.shape) < rng.random()] = 0
    return labels


def inputs(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 probabilities, uint8 RGB image) of the label map's shape."""
    rng = np.random.default_rng(seed)
    probabilities = ndimage.gaussian_filter(rng.random(labels.shape), 2).astype(np.float32)
    return probabilities, rng.integers(0, 256, size=(*labels.shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_rows_are_regionprops_rows_on_blobs_with_holes_parts_and_border_contacts(seed: int) -> None:
    labels = awkward_labels(seed)
    probabilities, image = inputs(labels, seed)
    assert nucleus_table(labels, 0.2465, probabilities, image) == regionprops_nucleus_table(
        labels, 0.2465, probabilities, image
    )


@pytest.mark.parametrize("seed", range(30))
def test_rows_are_regionprops_rows_on_pixel_noise(seed: int) -> None:
    labels = salt_and_pepper(seed)
    probabilities, image = inputs(labels, seed)
    assert nucleus_table(labels, 0.5, probabilities, image) == regionprops_nucleus_table(
        labels, 0.5, probabilities, image
    )


def test_rows_are_regionprops_rows_without_scale_probabilities_or_image() -> None:
    for seed in range(3):
        labels = awkward_labels(seed)
        assert nucleus_table(labels) == regionprops_nucleus_table(labels)


def test_rows_keep_regionprops_types() -> None:
    labels = awkward_labels(0)
    probabilities, image = inputs(labels, 0)
    for new, old in zip(
        nucleus_table(labels, 0.25, probabilities, image),
        regionprops_nucleus_table(labels, 0.25, probabilities, image),
        strict=True,
    ):
        assert [type(value) for value in new.values()] == [type(value) for value in old.values()]


def test_an_empty_label_map_has_no_rows() -> None:
    assert nucleus_table(np.zeros((8, 8), np.uint16)) == []


def test_values_near_a_rounding_tie_are_regionprops_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every value counts as near a tie: all of them are measured the way regionprops measures them.
    monkeypatch.setattr(nuclei, "ECCENTRICITY_MARGIN", 1.0)
    monkeypatch.setattr(nuclei, "SUM_DEPTH", 1e12)
    labels = awkward_labels(1)
    probabilities, _ = inputs(labels, 1)
    assert nucleus_table(labels, 0.5, probabilities) == regionprops_nucleus_table(labels, 0.5, probabilities)
