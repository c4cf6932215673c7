from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import square, write_monuseg_xml, write_rgb_tiff

from patchunet.errors import DataError
from patchunet.io import atomic_directory, atomic_file, read_label_image, read_polygons, read_rgb_image


def test_read_rgb_image_returns_uint8_rgb(tmp_path: Path) -> None:
    image = read_rgb_image(write_rgb_tiff(tmp_path / "a.tif", (40, 50)))
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8


def test_truncated_tiff_is_named_as_corrupt(tmp_path: Path) -> None:
    path = write_rgb_tiff(tmp_path / "a.tif")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"a\.tif: corrupt or truncated"):
        read_rgb_image(path)


def test_garbage_file_is_named_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "b.tif"
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"b\.tif: corrupt or truncated"):
        read_rgb_image(path)


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((20, 20), np.uint8), "grayscale"),
        (np.zeros((20, 20, 4), np.uint8), "RGBA"),
        (np.zeros((20, 20, 3), np.uint16), "uint16 pixels"),
    ],
)
def test_non_rgb8_images_are_refused(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(DataError, match=problem):
        read_rgb_image(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tif: file not found"):
        read_rgb_image(tmp_path / "nope.tif")


def test_label_image_must_be_single_channel(tmp_path: Path) -> None:
    path = write_rgb_tiff(tmp_path / "labels.tif")
    with pytest.raises(DataError, match="single-channel"):
        read_label_image(path)


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


def test_atomic_file_leaves_old_content_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stage died")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "outs"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("stage died")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["outs"]
