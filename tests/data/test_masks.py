from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import square, write_instance_map_png, write_monuseg_xml, write_rgb_tiff

from patchunet.data.masks import count_nuclei, make_label_map, rasterize_polygons
from patchunet.data.monuseg import ImageRecord
from patchunet.errors import DataError


def as_polygons(*polygons):
    return [np.asarray(p, dtype=float) for p in polygons]


def test_square_lands_one_pixel_up_and_left_as_poly2mask_does() -> None:
    # Vertices (X, Y) from (3, 2) to (6, 5), 1-based: pixel centres rows 1..4, cols 2..5 (0-based).
    labels, _ = rasterize_polygons(as_polygons(square(3, 2, 3)), (8, 8))
    expected = np.zeros((8, 8), np.uint16)
    expected[1:5, 2:6] = 1
    np.testing.assert_array_equal(labels, expected)


def test_ids_follow_file_order_starting_at_one() -> None:
    labels, report = rasterize_polygons(as_polygons(square(1, 1, 2), square(6, 6, 2)), (10, 10))
    assert labels[0, 0] == 1 and labels[5, 5] == 2
    assert labels.dtype == np.uint16 and report.nuclei == 2


def test_degenerate_polygons_are_skipped_and_counted() -> None:
    polygons = as_polygons(square(1, 1, 2), [(4, 4), (6, 6)], [(8, 8)], square(6, 6, 2))
    labels, report = rasterize_polygons(polygons, (10, 10))
    assert report.polygons == 4 and report.degenerate == 2
    assert set(np.unique(labels)) == {0, 1, 2}


def test_later_polygon_wins_overlap_and_overlap_is_counted() -> None:
    # Two 4x4-pixel squares sharing a 2x2 corner.
    labels, report = rasterize_polygons(as_polygons(square(1, 1, 3), square(3, 3, 3)), (10, 10))
    assert report.overlap_pixels == 4
    assert labels[2, 2] == 2 and labels[0, 0] == 1
    assert np.count_nonzero(labels == 1) == 12


def test_count_nuclei_ignores_gaps_in_ids() -> None:
    assert count_nuclei(np.array([[0, 3], [7, 7]])) == 2


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
