import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import write_rgb_tiff

from patchunet.core.errors import DataError
from patchunet.io.images import read_label_image, read_rgb_bytes, read_rgb_image


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


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (np.array([[0, -1], [2, 3]], np.int32), r"label map holds negative ids \(down to -1\)"),
        (np.array([[0, 2**32], [2, 3]], np.int64), r"label map holds ids up to 4294967296, over the 32-bit maximum"),
    ],
)
def test_label_ids_that_do_not_fit_an_unsigned_32_bit_map_are_refused_naming_the_file(
    tmp_path: Path, labels: np.ndarray, problem: str
) -> None:
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    with pytest.raises(DataError, match=rf"^{path}: {problem}") as error:
        read_label_image(path)
    assert "\n" not in str(error.value)


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "slides.tif"
    folder.mkdir()
    with pytest.raises(DataError, match=rf"^{folder}: is a folder, not an image file$"):
        read_rgb_image(folder)


def test_a_multi_page_tiff_is_named_as_pages_not_as_channels(tmp_path: Path) -> None:
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((2, 16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match=r"two\.tif: a TIFF of 2 pages .*expected a single image") as error:
        read_rgb_image(path)
    assert "channel" not in str(error.value)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"II*\x00junk"])
def test_bytes_that_are_no_image_are_named_by_the_senders_name_not_a_temporary_path(content: bytes) -> None:
    with pytest.raises(DataError) as caught:
        read_rgb_bytes(content, "upload.png")
    message = str(caught.value)
    assert message.startswith("upload.png")
    assert "patchunet-image-" not in message and "/tmp" not in message
    assert "\n" not in message
