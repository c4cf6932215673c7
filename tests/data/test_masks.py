import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import geojson_polygon, nuclei_polygons, square, write_instance_map_png, write_monuseg_xml, write_rgb_tiff

from patchunet.core.errors import DataError
from patchunet.data.masks import make_label_map
from patchunet.data.monuseg import ImageRecord


def record(tmp_path: Path, xml=None, instance_map=None, shape=(100, 100)) -> ImageRecord:
    image = write_rgb_tiff(tmp_path / "img.tif", shape)
    return ImageRecord("img", "train", image, xml, instance_map)


def test_label_map_from_xml_reports_agreement_with_instance_map(tmp_path: Path) -> None:
    polygons = [square(10, 10, 20), square(50, 50, 10)]
    xml = write_monuseg_xml(tmp_path / "img.xml", polygons)
    png = write_instance_map_png(tmp_path / "img.png", polygons)
    result = make_label_map(record(tmp_path, xml, png), prefer="xml")
    assert result.source == "xml" and result.nuclei == 2
    assert result.xml_vs_map_iou == pytest.approx(1.0)


def test_prefer_instance_map_uses_the_map_when_both_exist(tmp_path: Path) -> None:
    xml = write_monuseg_xml(tmp_path / "img.xml", [square(10, 10, 20)])
    png = write_instance_map_png(tmp_path / "img.png", [square(10, 10, 20), square(50, 50, 10)])
    result = make_label_map(record(tmp_path, xml, png), prefer="instance_map")
    assert result.source == "instance_map" and result.nuclei == 2


def test_instance_map_of_another_size_is_refused(tmp_path: Path) -> None:
    png = write_instance_map_png(tmp_path / "img.png", [square(10, 10, 20)], shape=(80, 100))
    with pytest.raises(DataError, match=r"img\.png: label map is 100x80 but its image img\.tif is 100x100"):
        make_label_map(record(tmp_path, None, png), prefer="xml")


def test_xml_of_only_degenerate_regions_is_refused(tmp_path: Path) -> None:
    xml = write_monuseg_xml(tmp_path / "img.xml", [[(1, 1), (5, 5)]])
    with pytest.raises(DataError, match="all 1 regions are degenerate"):
        make_label_map(record(tmp_path, xml), prefer="xml")


def test_uint32_instance_maps_are_accepted(tmp_path: Path) -> None:
    labels = np.zeros((100, 100), np.uint32)
    labels[5:9, 5:9] = 70000
    path = tmp_path / "img_map.tif"
    tifffile.imwrite(path, labels)
    result = make_label_map(record(tmp_path, None, path), prefer="xml")
    assert result.labels.dtype == np.uint32 and result.nuclei == 1


def test_xml_vertex_far_outside_the_image_is_refused_not_rasterised(tmp_path: Path) -> None:
    # one vertex at 1e12 would otherwise stretch the nucleus across the tile
    xml = write_monuseg_xml(tmp_path / "img.xml", [square(10, 10, 20), [(50, 50), (1e12, 55), (60, 60)]])
    with pytest.raises(DataError, match=r"img\.xml: Region 2 vertex 2 \(X=1e\+12, Y=55\) lies .* outside the 100x100"):
        make_label_map(record(tmp_path, xml), prefer="xml")


def test_polygons_outside_the_image_are_named_as_outside_not_degenerate(tmp_path: Path) -> None:
    xml = write_monuseg_xml(tmp_path / "img.xml", [square(500, 500, 20)])
    with pytest.raises(DataError, match=r"Region 1 vertex 2 \(X=520, Y=500\) lies 420 px outside"):
        make_label_map(record(tmp_path, xml), prefer="xml")


def geojson_record(tmp_path: Path, *features: dict, shape=(100, 100)) -> ImageRecord:
    path = tmp_path / "img.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    image = write_rgb_tiff(tmp_path / "img.tif", shape)
    return ImageRecord("img", "train", image, None, None, geojson=path)


def corners(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_label_map_from_geojson_leaves_its_holes_empty(tmp_path: Path) -> None:
    feature = geojson_polygon(corners(10, 10, 30, 30), corners(15, 15, 20, 20))
    result = make_label_map(geojson_record(tmp_path, feature), prefer="xml")
    expected = np.zeros((100, 100), np.uint16)
    expected[10:30, 10:30] = 1
    expected[15:20, 15:20] = 0
    np.testing.assert_array_equal(result.labels, expected)
    assert result.source == "geojson" and result.nuclei == 1


def test_a_multipolygon_is_one_nucleus_in_several_parts(tmp_path: Path) -> None:
    parts = [[[list(v) for v in (*ring, ring[0])]] for ring in (corners(0, 0, 4, 4), corners(10, 10, 14, 14))]
    feature = {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": parts}, "properties": {}}
    result = make_label_map(geojson_record(tmp_path, feature), prefer="xml")
    assert result.nuclei == 1 and np.count_nonzero(result.labels == 1) == 32


def test_a_polygon_crossing_the_border_is_clipped_to_the_image(tmp_path: Path) -> None:
    result = make_label_map(geojson_record(tmp_path, geojson_polygon(corners(-3, 95, 5, 103))), prefer="xml")
    assert np.count_nonzero(result.labels) == 5 * 5 and result.labels[99, 0] == 1


def test_geojson_gives_the_xml_labels_where_the_conventions_agree(tmp_path: Path) -> None:
    # the same outline is (X - 0.5, Y - 0.5) in GeoJSON's 0-based pixel corners (io.geojson)
    polygons = nuclei_polygons(seed=3)
    xml = write_monuseg_xml(tmp_path / "img.xml", polygons)
    from_xml = make_label_map(record(tmp_path, xml), prefer="xml").labels
    features = [geojson_polygon([(x - 0.5, y - 0.5) for x, y in polygon]) for polygon in polygons]
    from_geojson = make_label_map(geojson_record(tmp_path, *features), prefer="xml").labels
    np.testing.assert_array_equal(from_geojson, from_xml)


def test_points_and_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}}
    result = make_label_map(geojson_record(tmp_path, point, geojson_polygon(corners(1, 1, 5, 5))), prefer="xml")
    assert (result.raster.skipped, result.raster.polygons, result.nuclei) == (1, 1, 1)


def test_geojson_without_a_usable_polygon_is_refused(tmp_path: Path) -> None:
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}}
    degenerate = geojson_polygon([(1, 1), (5, 5)])
    with pytest.raises(
        DataError, match=r"img\.geojson: no usable polygon: 1 polygon features \(1 degenerate\), 1 other"
    ):
        make_label_map(geojson_record(tmp_path, point, degenerate), prefer="xml")


def test_malformed_geojson_is_one_line_naming_it(tmp_path: Path) -> None:
    record = geojson_record(tmp_path)
    record.geojson.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(DataError, match=r"img\.geojson: not valid JSON"):
        make_label_map(record, prefer="xml")


def test_geojson_vertex_far_outside_the_image_is_refused_as_in_the_xml(tmp_path: Path) -> None:
    # a tile's nuclei exported in the whole slide's coordinates
    feature = geojson_polygon(corners(5000, 5000, 5010, 5010))
    with pytest.raises(
        DataError, match=r"polygon feature 1: vertex \(x=5010, y=5000\) lies 4910 px outside the 100x100"
    ):
        make_label_map(geojson_record(tmp_path, feature), prefer="xml")
