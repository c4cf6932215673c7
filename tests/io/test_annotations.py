from pathlib import Path

import numpy as np
import pytest
from conftest import square, write_monuseg_xml

from patchunet.core.errors import DataError
from patchunet.io.annotations import count_nuclei, rasterize_polygons, read_polygons


def test_read_polygons_keeps_file_order_and_vertices(tmp_path: Path) -> None:
    path = write_monuseg_xml(tmp_path / "a.xml", [square(1, 1, 4), [(2.5, 3.5), (7, 3.5), (7, 9)]])
    polygons = read_polygons(path)
    assert [p.shape for p in polygons] == [(4, 2), (3, 2)]
    assert polygons[1][0].tolist() == [2.5, 3.5]


def test_malformed_xml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<Annotations><Region><Vertices><Vertex X='1' Y='2'></Vertices>")
    with pytest.raises(DataError, match=r"bad\.xml: malformed XML"):
        read_polygons(path)


def test_xml_without_regions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_text("<Annotations><Annotation><Regions/></Annotation></Annotations>")
    with pytest.raises(DataError, match=r"empty\.xml: XML holds no <Region>"):
        read_polygons(path)


def test_xml_with_a_non_numeric_vertex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.xml"
    path.write_text('<Annotations><Region Id="7"><Vertices><Vertex X="a" Y="2"/></Vertices></Region></Annotations>')
    with pytest.raises(DataError, match="Region 7 has a bad vertex"):
        read_polygons(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_vertex_is_refused_naming_region_and_vertex(tmp_path: Path, value: str) -> None:
    path = write_monuseg_xml(tmp_path / "v.xml", [square(1, 1, 4), [(2, 2), (float(value), 5), (7, 9)]])
    with pytest.raises(DataError, match=rf"v\.xml: Region 2 vertex 2 is not a finite number \(X={value}, Y=5\)"):
        read_polygons(path)


def test_vertex_far_outside_the_image_is_refused(tmp_path: Path) -> None:
    path = write_monuseg_xml(tmp_path / "v.xml", [square(10, 10, 4), [(20, 20), (1e12, 25), (24, 30)]])
    read_polygons(path)  # without the image's shape, only finiteness is checked
    with pytest.raises(DataError, match=r"Region 2 vertex 2 \(X=1e\+12, Y=25\) lies .* px outside the 100x80 image"):
        read_polygons(path, shape=(80, 100))


def test_vertices_slightly_past_the_border_are_accepted(tmp_path: Path) -> None:
    # real MoNuSeg XML traces nuclei cut by the border up to ~4 px beyond it
    path = write_monuseg_xml(tmp_path / "v.xml", [[(-3.9, 1), (104.9, 1), (104.9, 84.9), (-3.9, 84.9)]])
    assert len(read_polygons(path, shape=(80, 100))) == 1
    far = write_monuseg_xml(tmp_path / "far.xml", [[(-5, 1), (10, 1), (10, 10)]])
    with pytest.raises(DataError, match=r"vertex 1 .* lies 6 px outside"):
        read_polygons(far, shape=(80, 100))


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
