"""Slides: the tile count check that refuses a level whose size tags outgrow its tiles."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tiffslide

from patchunet.errors import DataError
from patchunet.inference.slides import _check_tiles

NDPI_TAGS = [(65420, "I", 1, 1, True), (271, "s", 0, "Hamamatsu", True)]
"""FileFormat (65420) and Make (271): the tags tifffile tells an NDPI page by."""


def tiled(path: Path, **options) -> Path:
    """A 512 x 512 RGB TIFF in four 256 px tiles."""
    tifffile.imwrite(path, np.full((512, 512, 3), 236, np.uint8), tile=(256, 256), **options)
    return path


def inflate(path: Path) -> Path:
    """Patch the width and length tags to 200000 px: 4 tiles held, 611,524 declared."""
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HII", data, entry + 2, 4, 1, 200_000)  # LONG, count 1
    path.write_bytes(bytes(data))
    return path


def check(path: Path) -> None:
    handle = tiffslide.TiffSlide(path)
    try:
        _check_tiles(path, handle)
    finally:
        handle.close()


def test_a_tiled_tiff_holding_every_tile_passes_the_tile_check(tmp_path: Path) -> None:
    check(tiled(tmp_path / "slide.tif"))


def test_a_tiled_tiff_whose_size_tags_outgrow_its_tiles_is_refused(tmp_path: Path) -> None:
    path = inflate(tiled(tmp_path / "slide.tif"))
    with pytest.raises(DataError, match=r"level 0 declares 200000x200000 px in 611,524 tiles but the file holds 4"):
        check(path)


def test_an_ndpi_whose_tiles_are_virtual_is_not_counted(tmp_path: Path) -> None:
    path = inflate(tiled(tmp_path / "ndpi-tagged.tif", extratags=NDPI_TAGS))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ndpi
    check(path)
