"""GeoJSON out and in: nuclei as QuPath detections, rasterised back to the same instance map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patchunet.core.errors import DataError
from patchunet.evaluation.metrics import instance_counts
from patchunet.io.drawing import YELLOW
from patchunet.io.geojson import (
    GeoJSONReport,
    feature_collection_file,
    nuclei_feature_collection,
    rasterize_geojson,
    read_geojson_polygons,
    ring_crosses_itself,
    write_geojson,
)
from patchunet.postprocess.nuclei import nucleus_table

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


def round_trip(labels: np.ndarray, **kwargs) -> tuple[np.ndarray, GeoJSONReport]:
    """Through JSON text, as a file would carry it."""
    collection = json.loads(json.dumps(nuclei_feature_collection(labels, **kwargs)))
    return rasterize_geojson(collection, labels.shape, **kwargs)


def polygons_of(feature: dict) -> list:
    geometry = feature["geometry"]
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def signed_area(ring: list) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def dense(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in increasing order, as the features come back."""
    ids = np.unique(labels[labels > 0])
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[ids] = np.arange(1, ids.size + 1)
    return lookup[labels]


# The round trip


def test_round_trip_gives_back_exactly_the_same_instance_map() -> None:
    labels = synthetic_labels()
    back, report = round_trip(labels)
    np.testing.assert_array_equal(back, labels)
    assert instance_counts(labels, back).aji == 1.0
    assert (report.nuclei, report.overlap_pixels, report.degenerate, report.skipped) == (9, 0, 0, 0)


def test_round_trip_is_exact_on_random_maps_full_of_holes_parts_and_corners() -> None:
    # Salt-and-pepper labels: the worst case for the tracer (diagonal contacts, one-pixel holes).
    rng = np.random.default_rng(0)
    for _ in range(40):
        labels = rng.integers(0, 6, size=tuple(rng.integers(3, 30, size=2)), dtype=np.uint16)
        labels[rng.random(labels.shape) < rng.random()] = 0
        back, report = round_trip(labels)
        np.testing.assert_array_equal(back, dense(labels))
        assert report.overlap_pixels == 0


def test_round_trip_keeps_maps_with_gaps_in_their_ids_up_to_renumbering() -> None:
    labels = synthetic_labels() * 3
    back, _ = round_trip(labels)
    np.testing.assert_array_equal(back, dense(labels))
    assert instance_counts(labels, back).aji == 1.0


def test_round_trip_through_a_tile_offset() -> None:
    labels = synthetic_labels()
    back, _ = round_trip(labels, offset=(12000, 3400))
    np.testing.assert_array_equal(back, labels)


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
    np.testing.assert_array_equal(rasterize_geojson(path, SHAPE)[0], labels)


# Import: GeoJSON as QuPath writes it


def square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def polygon_feature(*rings: list) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": list(rings)}, "properties": {}}


def test_a_pixel_is_inside_when_its_centre_is() -> None:
    # (1.4, 2.4)-(4.6, 5.4) holds the centres (c + 0.5, r + 0.5) of cols 1..4 and rows 2..4
    labels, _ = rasterize_geojson(
        [polygon_feature([[1.4, 2.4], [4.6, 2.4], [4.6, 5.4], [1.4, 5.4], [1.4, 2.4]])], (8, 8)
    )
    expected = np.zeros((8, 8), np.uint16)
    expected[2:5, 1:5] = 1
    np.testing.assert_array_equal(labels, expected)


def test_a_collection_a_list_of_features_and_one_feature_read_alike() -> None:
    feature = polygon_feature(square(1, 1, 3))
    as_collection = rasterize_geojson({"type": "FeatureCollection", "features": [feature]}, (6, 6))[0]
    np.testing.assert_array_equal(rasterize_geojson([feature], (6, 6))[0], as_collection)
    np.testing.assert_array_equal(rasterize_geojson(feature, (6, 6))[0], as_collection)
    assert as_collection.sum() == 9


def test_holes_are_cut_out_and_multipolygon_parts_share_one_id() -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [[square(0, 0, 6), square(2, 2, 2)], [square(8, 8, 2)]]},
    }
    labels, report = rasterize_geojson(feature, (12, 12))
    expected = np.zeros((12, 12), np.uint16)
    expected[0:6, 0:6] = 1
    expected[2:4, 2:4] = 0
    expected[8:10, 8:10] = 1
    np.testing.assert_array_equal(labels, expected)
    assert report.nuclei == 1


def test_a_polygon_crossing_the_border_is_clipped_to_the_image() -> None:
    labels, report = rasterize_geojson([polygon_feature(square(-5, -5, 8)), polygon_feature(square(4, 4, 100))], (6, 6))
    assert (labels[:3, :3] == 1).all() and (labels[4:, 4:] == 2).all()
    assert (labels > 0).sum() == 9 + 4 and report.nuclei == 2


def test_later_features_win_overlaps_and_the_overlap_is_counted() -> None:
    labels, report = rasterize_geojson([polygon_feature(square(0, 0, 4)), polygon_feature(square(2, 2, 4))], (8, 8))
    assert labels[3, 3] == 2 and labels[1, 1] == 1
    assert report.overlap_pixels == 4


def test_points_lines_and_empty_geometries_are_skipped_and_counted() -> None:
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 3]}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}},
        {"type": "Feature", "geometry": None},
        polygon_feature(square(1, 1, 2)),
    ]
    labels, report = rasterize_geojson(features, (6, 6))
    assert (report.skipped, report.polygons, report.nuclei) == (3, 1, 1)
    assert labels.max() == 1
    assert len(read_geojson_polygons(features)) == 1


def test_degenerate_polygons_are_counted_and_take_no_id() -> None:
    features = [polygon_feature([[1, 1], [3, 3], [1, 1]]), polygon_feature(square(1, 1, 2))]
    labels, report = rasterize_geojson(features, (6, 6))
    assert (report.polygons, report.degenerate, report.nuclei) == (2, 1, 1)
    assert labels.max() == 1


def test_read_geojson_polygons_gives_rings_of_xy_vertices_without_the_closing_repeat(tmp_path: Path) -> None:
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps([polygon_feature(square(1, 2, 3), square(2, 3, 1))]))
    [[[exterior, hole]]] = read_geojson_polygons(path)
    np.testing.assert_array_equal(exterior, [[1, 2], [4, 2], [4, 5], [1, 5]])
    assert hole.shape == (4, 2)


BAD_GEOJSON = {
    "not_json": (b"{'type': 'Feature'", "not valid JSON"),
    "not_utf8": (b"\xc3\x28[]", "not valid JSON (not UTF-8 text)"),
    "other_json": (b'{"type": "Topology"}', "not GeoJSON: expected a FeatureCollection"),
    "a_number": (b"42", "not GeoJSON: expected a FeatureCollection"),
    "no_features": (b'{"type": "FeatureCollection"}', "has no list of 'features'"),
    "not_a_feature": (b'[{"type": "Polygon", "coordinates": []}]', "item 1 is not a Feature"),
    "unknown_geometry": (b'{"type": "Feature", "geometry": {"type": "Circle"}}', "feature 1 has no valid geometry"),
    "string_coordinates": (
        b'{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[["1", "2"], [3, 4], [5, 1]]]}}',
        "feature 1: a ring's coordinates are not [x, y] pairs of finite numbers",
    ),
    "nan_coordinates": (
        b'[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [3, 0], [3, 3]]]}},'
        b'{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, NaN], [3, 4], [5, 1]]]}}]',
        "feature 2: a ring's coordinates",
    ),
    "flat_coordinates": (
        b'{"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [1, 2, 3]}}',
        "feature 1: MultiPolygon coordinates are not lists of rings",
    ),
}


@pytest.mark.parametrize("case", list(BAD_GEOJSON))
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    content, problem = BAD_GEOJSON[case]
    path = tmp_path / f"{case}.geojson"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        rasterize_geojson(path, (8, 8))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_geojson_polygons(tmp_path / "absent.geojson")


# Real MoNuSeg label maps


@pytest.fixture(scope="module")
def real_test_labels(real_monuseg: Path) -> np.ndarray:
    """A test image's official labels, rasterised from its XML (575 nuclei)."""
    from patchunet.data.masks import make_label_map
    from patchunet.data.monuseg import official_dirs, pair_files

    [record] = [r for r in pair_files(official_dirs(real_monuseg), "test") if r.image_id == "TCGA-2Z-A9J9-01A-01-TS1"]
    return make_label_map(record, prefer="xml").labels


def test_round_trip_is_exact_on_a_real_monuseg_label_map(real_test_labels: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "TCGA-2Z-A9J9-01A-01-TS1.geojson"
    write_geojson(path, nuclei_feature_collection(real_test_labels, offset=(40000, 25000)))
    back, report = rasterize_geojson(path, real_test_labels.shape, offset=(40000, 25000))
    assert report.nuclei == 575 and report.overlap_pixels == 0
    assert instance_counts(real_test_labels, back).aji == 1.0
    assert np.count_nonzero(back != real_test_labels) == 0  # tolerance: none, every pixel comes back


def test_round_trip_is_exact_on_a_real_instance_map_with_gaps_in_its_ids(real_monuseg: Path) -> None:
    from patchunet.io.images import read_label_image

    labels = read_label_image(
        real_monuseg / "MoNuSeg 2018 Training Data" / "Instance Maps" / "TCGA-HE-7128-01Z-00-DX1.png"
    )
    back, report = round_trip(labels)
    assert report.nuclei == 1073
    np.testing.assert_array_equal(back, dense(labels))


BOW_TIE = [[0, 0], [6, 6], [6, 0], [0, 6]]
"""A figure eight: its edges cross at (3, 3), between vertices."""


def test_a_polygon_whose_outline_crosses_itself_is_skipped_and_counted() -> None:
    features = [polygon_feature(BOW_TIE), polygon_feature(square(7, 7, 2))]
    labels, report = rasterize_geojson(features, (10, 10))
    assert (report.polygons, report.self_intersecting, report.degenerate, report.nuclei) == (2, 1, 0, 1)
    assert labels[:7, :7].max() == 0 and (labels[7:9, 7:9] == 1).all()


PINCHED = [[0, 0], [2, 2], [4, 0], [4, 4], [2, 2], [0, 4]]
"""Two lobes that touch at (2, 2), the outline passing through it twice without crossing."""


def test_a_polygon_whose_outline_only_touches_itself_is_filled() -> None:
    labels, report = rasterize_geojson([polygon_feature(PINCHED)], (6, 6))
    assert (report.self_intersecting, report.nuclei) == (0, 1)
    assert np.count_nonzero(labels) == 12  # two lobes of 6 pixel centres each


@pytest.mark.parametrize(
    ("ring", "crosses"),
    [
        (BOW_TIE, True),
        ([[0, 0], [2, 0], [4, 4], [6, 4], [6, 0], [4, 0], [2, 4], [0, 4]], True),  # edges cross at (3, 2)
        ([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]], False),  # a vertex on another edge: touches
        (PINCHED, False),  # through one point twice, touching
        ([[0, 0], [6, 0], [6, 2], [4, 0], [2, 0], [0, 2]], False),  # runs back along [2, 4]: no area
        ([[0, 0], [2, 2], [4, 4], [4, 0], [2, 2], [0, 4]], False),  # strokes cross at a shared vertex
        ([[0, 0], [4, 0], [4, 4], [0, 4]], False),
        ([[0, 0], [4, 0], [4, 0], [4, 4], [0, 4]], False),  # a repeated vertex adds no edge
        ([[0, 0], [4, 0], [2, 1], [4, 4], [0, 4]], False),  # concave
        ([[0, 0], [3, 0], [0, 3]], False),
    ],
)
def test_ring_crosses_itself_flags_crossings_between_vertices_only(ring: list, crosses: bool) -> None:
    assert ring_crosses_itself(np.array(ring, np.float64)) is crosses


def test_ring_crosses_itself_finds_a_crossing_beyond_one_block_of_edges() -> None:
    from patchunet.io.geojson import SEGMENT_BLOCK

    angles = np.linspace(0, 2 * np.pi, 3 * SEGMENT_BLOCK, endpoint=False)
    circle = np.stack([100 * np.cos(angles), 100 * np.sin(angles)], axis=1)
    assert not ring_crosses_itself(circle)
    crossed = circle.copy()
    crossed[[-2, -1]] = crossed[[-1, -2]]  # swap two vertices near the end: two late edges cross
    assert ring_crosses_itself(crossed)


def test_a_streamed_feature_collection_reads_back_as_the_collection(tmp_path: Path) -> None:
    collection = nuclei_feature_collection(synthetic_labels())
    with feature_collection_file(tmp_path / "nuclei.geojson") as add:
        for feature in collection["features"]:
            add(feature)
    assert json.loads((tmp_path / "nuclei.geojson").read_text()) == collection
    assert np.array_equal(rasterize_geojson(tmp_path / "nuclei.geojson", SHAPE)[0], synthetic_labels())


def test_a_streamed_feature_collection_that_fails_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), feature_collection_file(tmp_path / "nuclei.geojson") as add:
        add(nuclei_feature_collection(synthetic_labels())["features"][0])
        raise RuntimeError("killed mid-slide")
    assert list(tmp_path.iterdir()) == []
