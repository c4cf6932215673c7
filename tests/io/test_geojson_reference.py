"""The nuclei's GeoJSON outlines against the tracer they had before (each nucleus labelled, filled
and traced on its own): the same features, vertex for vertex, on label maps full of awkward shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_ellipse

from benchmarks.perf.nucleus_table_speed import nucleus_by_nucleus_geometries
from patchunet.io.geojson import nuclei_feature_collection


def awkward_labels(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Touching blobs cut by the border, rings with nuclei inside, parts meeting at corners,
    one-pixel nuclei and gaps in the ids."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    for nucleus in range(1, 40):
        ellipse = random_ellipse(rng, shape)
        blob = ellipse <= 1
        if rng.random() < 0.3:  # a hole, with another nucleus in it now and then
            hole = ellipse <= rng.uniform(0.05, 0.4)
            blob &= ~hole
            if rng.random() < 0.5:
                labels[hole & (ellipse <= 0.02)] = 500 + nucleus
        labels[blob] = nucleus * 3
    corner = rng.integers(0, 80, size=2)
    labels[corner[0] : corner[0] + 3, corner[1] : corner[1] + 3] = 400  # two blocks meeting at a corner
    labels[corner[0] + 3 : corner[0] + 5, corner[1] + 3 : corner[1] + 6] = 400
    for nucleus in range(200, 210):
        labels[rng.integers(shape[0]), rng.integers(shape[1])] = nucleus
    labels[rng.random(shape) < 0.005] = 300
    labels[:, -1] = 301
    return labels


@pytest.mark.parametrize("seed", range(8))
def test_outlines_are_the_reference_tracers_on_blobs_holes_and_corners(seed: int) -> None:
    labels = awkward_labels(seed)
    features = nuclei_feature_collection(labels, offset=(1000, 30))["features"]
    assert [feature["geometry"] for feature in features] == nucleus_by_nucleus_geometries(labels, (1000, 30))


@pytest.mark.parametrize("seed", range(40))
def test_outlines_are_the_reference_tracers_on_pixel_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=tuple(rng.integers(1, 30, size=2))).astype(np.uint16)
    labels[rng.random(labels.shape) < rng.random()] = 0
    features = nuclei_feature_collection(labels)["features"]
    assert [feature["geometry"] for feature in features] == nucleus_by_nucleus_geometries(labels)


def test_outline_coordinates_are_python_ints() -> None:
    features = nuclei_feature_collection(awkward_labels(0))["features"]
    assert "." not in json.dumps([feature["geometry"] for feature in features])
