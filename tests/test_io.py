import os
import stat
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import square, write_monuseg_xml, write_rgb_tiff

from patchunet.errors import DataError
from patchunet.io import (
    atomic_directory,
    atomic_file,
    current_umask,
    read_label_image,
    read_polygons,
    read_rgb_image,
    write_label_tiff,
)


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


def write_png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height RGB, with one row of pixel data: a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    row = zlib.compress(b"\x00" * (1 + 3 * width))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b""))
    return path


def write_tiff_declaring(path: Path, width: int, height: int) -> Path:
    """A tiled zlib TIFF of width x height black RGB: every tile is the same few compressed bytes."""
    tile = zlib.compress(np.zeros((512, 512, 3), np.uint8).tobytes())
    tiles = (-(-width // 512)) * (-(-height // 512))
    tifffile.imwrite(
        path, iter([tile] * tiles), shape=(height, width, 3), dtype=np.uint8, tile=(512, 512), compression="zlib"
    )
    return path


def peak_bytes_while(read: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as raised:
            read()
        assert "\n" not in str(raised.value)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("write", "name", "size", "declared"),
    [
        (write_png_declaring, "bomb.png", (30000, 30000), "900000000 pixels"),  # over Pillow's own hard limit
        (write_png_declaring, "bomb.png", (11000, 10000), "11000x10000 image (110,000,000 pixels)"),
        (write_tiff_declaring, "bomb.tif", (30000, 30000), "30000x30000 image (900,000,000 pixels)"),
    ],
)
def test_image_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path, write, name, size, declared) -> None:
    path = write(tmp_path / name, *size)
    assert path.stat().st_size < 5_000_000
    with pytest.raises(DataError, match=rf"{name}: declares a") as raised:
        read_rgb_image(path)
    assert declared in str(raised.value) and "over the limit of 100 megapixels" in str(raised.value)
    assert peak_bytes_while(lambda: read_rgb_image(path)) < 50_000_000  # decoding would take 2.7 GB


def test_label_maps_have_the_same_size_limit(tmp_path: Path) -> None:
    path = write_tiff_declaring(tmp_path / "labels.tif", 30000, 30000)
    with pytest.raises(DataError, match="over the limit of 100 megapixels"):
        read_label_image(path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_max_side_refuses_a_larger_image_before_decoding(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"wide{suffix}"
    image = np.zeros((20, 5000, 3), np.uint8)
    if suffix == ".png":
        path.write_bytes(imagecodecs.png_encode(image))
    else:
        tifffile.imwrite(path, image, photometric="rgb")
    with pytest.raises(DataError, match=rf"wide\{suffix}: 5000x20 px is larger than 4000 px on a side"):
        read_rgb_image(path, max_side=4000)
    assert read_rgb_image(path, max_side=5000).shape == (20, 5000, 3)


def test_planar_rgb_tiff_is_read_as_rgb(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_rgb_image(path), rgb)


def test_corrupt_png_is_one_line_naming_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(imagecodecs.png_encode(np.zeros((50, 50, 3), np.uint8))[:60])
    with pytest.raises(DataError) as raised:
        read_rgb_image(path)
    assert str(raised.value).startswith(f"{path}: corrupt or truncated PNG (")
    assert "\n" not in str(raised.value)


def test_file_that_is_no_image_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not\nan\nimage\n")
    with pytest.raises(DataError, match=r"notes\.png: corrupt or truncated image, or not an image") as raised:
        read_rgb_image(path)
    assert "\n" not in str(raised.value)


def test_png_images_and_label_maps_are_read(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    labels = np.arange(600, dtype=np.uint16).reshape(20, 30)
    (tmp_path / "rgb.png").write_bytes(imagecodecs.png_encode(rgb))
    (tmp_path / "labels.png").write_bytes(imagecodecs.png_encode(labels))
    np.testing.assert_array_equal(read_rgb_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_label_image(tmp_path / "labels.png"), labels)


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


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        with atomic_directory(tmp_path / "outs") as staging:
            (staging / "a.txt").write_text("a")
        write_label_tiff(tmp_path / "labels.tif", np.zeros((4, 4), np.uint16))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "labels.tif").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "outs").stat().st_mode) == 0o777 & ~umask


def test_current_umask_reads_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(previous)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_killed_writers_are_removed(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / f".outs.{gone}.abc123.tmp").mkdir()
    (tmp_path / f".outs.{gone}.abc123.tmp" / "big.npy").write_bytes(b"x" * 100)
    (tmp_path / f".out.json.{gone}.xyz789.tmp").write_text("half")
    with atomic_directory(tmp_path / "outs") as staging:
        (staging / "a.txt").write_text("a")
    with atomic_file(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "outs"]


def test_a_live_writers_staging_folder_is_kept(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            busy = tmp_path / f".outs.{live.pid}.abc123.tmp"
            busy.mkdir()
            other = tmp_path / f".outs.v2.{dead_pid()}.abc123.tmp"  # a sibling output's name: not ours
            other.mkdir()
            with atomic_directory(tmp_path / "outs") as staging:
                (staging / "a.txt").write_text("a")
            assert busy.is_dir() and (other.is_dir())
        finally:
            live.kill()
