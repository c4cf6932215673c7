"""GeoJSON out: nuclei as QuPath detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from patchunet.data.geojson import (
    nuclei_feature_collection,
    write_geojson,
)
from patchunet.evaluation.overlay import YELLOW
from patchunet.inference.nuclei import nucleus_table

SHAPE = (48, 64)
DISC, RING, TWO_PARTS, AT_BORDER, LEFT, RIGHT, ONE_PIXEL, IN_THE_HOLE, CORNERS = range(1, 10)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def synthetic_labels() -> np.ndarray:
    """(48, 64) uint16 labels 1..9: every shape the tracer must get right."""
    labels = np.zeros(SHAPE, np.uint16)
    labels[disc(SHAPE, (8, 8), 5)] = DISC
    labels[disc(SHAPE, (24, 24), 8) & ~disc(SHAPE, (24, 24), 4)] = RING  # a hole...
    labels[disc(SHAPE, (24, 24), 1.5)] = IN_THE_HOLE  # ...with another nucleus inside it
    labels[4:8, 40:44] = TWO_PARTS
    labels[11:14, 50:56] = TWO_PARTS
    labels[disc(SHAPE, (44, 60), 6)] = AT_BORDER  # cut by the bottom and right edges
    labels[36:44, 8:14] = LEFT  # touching nuclei: they share an edge
    labels[36:44, 14:20] = RIGHT
    labels[40, 30] = ONE_PIXEL
    labels[30:32, 40:42] = CORNERS  # two blocks of one nucleus that meet only at a corner
    labels[32:34, 42:44] = CORNERS
    return labels


def polygons_of(feature: dict) -> list:
    geometry = feature["geometry"]
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def signed_area(ring: list) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


# Export: what QuPath reads


def test_every_nucleus_is_a_qupath_detection_with_a_classification() -> None:
    collection = nuclei_feature_collection(synthetic_labels(), classification="Tumor nucleus")
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 9
    for nucleus, feature in enumerate(collection["features"], start=1):
        assert feature["type"] == "Feature"
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["classification"] == {"name": "Tumor nucleus", "color": list(YELLOW)}
        assert properties["nucleus"] == nucleus and properties["name"] == f"Tumor nucleus {nucleus}"


def test_measurements_are_the_numbers_of_each_nucleus_row() -> None:
    labels = synthetic_labels()
    rows = nucleus_table(labels)  # no mpp: area_um2 and mean_probability are blank
    collection = nuclei_feature_collection(labels, measurements={row["nucleus"]: row for row in rows})
    measured = collection["features"][0]["properties"]["measurements"]
    assert measured["area_px"] == int((labels == DISC).sum()) and measured["centroid_x"] == 8.0
    assert "area_um2" not in measured and "mean_probability" not in measured
    assert all(
        type(value) in (int, float)
        for feature in collection["features"]
        for value in feature["properties"]["measurements"].values()
    )


def test_outlines_run_along_pixel_edges_so_their_area_is_the_pixel_count() -> None:
    labels = synthetic_labels()
    for nucleus, feature in enumerate(nuclei_feature_collection(labels)["features"], start=1):
        rings = [ring for polygon in polygons_of(feature) for ring in polygon]
        assert all(isinstance(v, int) for ring in rings for vertex in ring for v in vertex)  # pixel corners
        assert all(ring[0] == ring[-1] for ring in rings)  # closed, as GeoJSON wants
        assert sum(signed_area(ring) for ring in rings) == (labels == nucleus).sum()


def test_a_one_pixel_nucleus_is_its_pixel_square() -> None:
    feature = nuclei_feature_collection(synthetic_labels())["features"][ONE_PIXEL - 1]
    [exterior] = feature["geometry"]["coordinates"]
    assert sorted(map(tuple, exterior[:-1])) == [(30, 40), (30, 41), (31, 40), (31, 41)]


def test_enclosed_background_is_a_hole_and_the_nucleus_in_it_a_polygon_of_its_own() -> None:
    features = nuclei_feature_collection(synthetic_labels())["features"]
    exterior, hole = features[RING - 1]["geometry"]["coordinates"]
    assert signed_area(exterior) > 0 > signed_area(hole)  # RFC 7946: exterior counter-clockwise
    assert features[IN_THE_HOLE - 1]["geometry"]["type"] == "Polygon"


def test_a_nucleus_in_two_parts_is_a_multipolygon() -> None:
    feature = nuclei_feature_collection(synthetic_labels())["features"][TWO_PARTS - 1]
    assert feature["geometry"]["type"] == "MultiPolygon" and len(feature["geometry"]["coordinates"]) == 2


def test_blocks_meeting_at_a_corner_are_separate_polygons_with_simple_rings() -> None:
    # One ring through the shared corner twice would be invalid in QuPath's JTS; two squares touching are not.
    feature = nuclei_feature_collection(synthetic_labels())["features"][CORNERS - 1]
    polygons = polygons_of(feature)
    assert len(polygons) == 2
    for [ring] in polygons:
        assert len({tuple(vertex) for vertex in ring[:-1]}) == len(ring) - 1


def test_offset_shifts_every_vertex() -> None:
    labels = synthetic_labels()
    plain = nuclei_feature_collection(labels)["features"]
    shifted = nuclei_feature_collection(labels, offset=(1000, 20))["features"]
    for a, b in zip(plain, shifted, strict=True):
        for ring_a, ring_b in zip(
            (r for p in polygons_of(a) for r in p), (r for p in polygons_of(b) for r in p), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(ring_b), np.add(ring_a, [1000, 20]))


def test_an_empty_map_is_an_empty_collection() -> None:
    assert nuclei_feature_collection(np.zeros((5, 5), np.uint16)) == {"type": "FeatureCollection", "features": []}


def test_write_geojson_writes_json_that_reads_back(tmp_path: Path) -> None:
    labels = synthetic_labels()
    path = tmp_path / "out" / "tile.geojson"
    write_geojson(path, nuclei_feature_collection(labels))
    assert json.loads(path.read_text()) == nuclei_feature_collection(labels)
    assert [p.name for p in path.parent.iterdir()] == ["tile.geojson"]  # no temporary left behind
