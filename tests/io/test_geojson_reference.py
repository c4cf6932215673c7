"""The nuclei's GeoJSON outlines against the tracer they had before (each nucleus labelled, filled
and traced on its own): the same features, vertex for vertex, on label maps full of awkward shapes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy import ndimage

from patchunet.io.geojson import nuclei_feature_collection


def reference_coordinates(labels: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list:
    """Each feature's geometry as the tracer before gave it: the reference."""
    padded = np.pad(labels, 1)
    geometries = []
    for index, box in enumerate(ndimage.find_objects(padded)):
        if box is None:
            continue
        around = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        origin = np.array([around[1].start - 1 + offset[0], around[0].start - 1 + offset[1]])
        polygons = [[(ring + origin).tolist() for ring in rings] for rings in outline(padded[around] == index + 1)]
        geometries.append(
            {"type": "Polygon", "coordinates": polygons[0]}
            if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
    return geometries


def outline(mask: np.ndarray) -> list[list[np.ndarray]]:
    parts, count = ndimage.label(mask)
    polygons = []
    for part in range(1, count + 1):
        inside = parts == part
        filled = ndimage.binary_fill_holes(inside)
        holes, hole_count = ndimage.label(filled & ~inside)
        rings = [ring_of(filled, exterior=True)]
        rings += [ring_of(holes == hole, exterior=False) for hole in range(1, hole_count + 1)]
        polygons.append([np.vstack([ring, ring[:1]]) for ring in rings])
    return polygons


def ring_of(region: np.ndarray, *, exterior: bool) -> np.ndarray:
    doubled = np.repeat(np.repeat(region.astype(np.uint8), 2, axis=0), 2, axis=1)
    [contour], _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    corners = (contour[:, 0, :] + 1) // 2
    corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]
    before, after = corners - np.roll(corners, 1, axis=0), np.roll(corners, -1, axis=0) - corners
    corners = corners[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]
    x, y = corners[:, 0].astype(np.float64), corners[:, 1].astype(np.float64)
    if (0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0) != exterior:
        corners = corners[::-1]
    return corners


def awkward_labels(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Touching blobs cut by the border, rings with nuclei inside, parts meeting at corners,
    one-pixel nuclei and gaps in the ids."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for nucleus in range(1, 40):
        centre = rng.uniform(-5, shape[0] + 5), rng.uniform(-5, shape[1] + 5)
        radii = rng.uniform(1, 14, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = rows - centre[0], cols - centre[1]
        u, v = dy * np.cos(angle) + dx * np.sin(angle), -dy * np.sin(angle) + dx * np.cos(angle)
        blob = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1
        if rng.random() < 0.3:  # a hole, with another nucleus in it now and then
            hole = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= rng.uniform(0.05, 0.4)
            blob &= ~hole
            if rng.random() < 0.5:
                labels[hole & ((u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 0.02)] = 500 + nucleus
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
    assert [feature["geometry"] for feature in features] == reference_coordinates(labels, (1000, 30))


@pytest.mark.parametrize("seed", range(40))
def test_outlines_are_the_reference_tracers_on_pixel_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=tuple(rng.integers(1, 30, size=2))).astype(np.uint16)
    labels[rng.random(labels.shape) < rng.random()] = 0
    features = nuclei_feature_collection(labels)["features"]
    assert [feature["geometry"] for feature in features] == reference_coordinates(labels)


def test_outline_coordinates_are_python_ints() -> None:
    features = nuclei_feature_collection(awkward_labels(0))["features"]
    assert "." not in json.dumps([feature["geometry"] for feature in features])
