"""Slides: the tile count check that refuses a level whose size tags outgrow its tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import tiffslide
from conftest import inflate_tiff_size_tags

from patchunet.core.errors import DataError
from patchunet.io.slides import _check_tiles

NDPI_TAGS = [(65420, "I", 1, 1, True), (271, "s", 0, "Hamamatsu", True)]
"""FileFormat (65420) and Make (271): the tags tifffile tells an NDPI page by."""


def tiled(path: Path, **options) -> Path:
    """A 512 x 512 RGB TIFF in four 256 px tiles."""
    tifffile.imwrite(path, np.full((512, 512, 3), 236, np.uint8), tile=(256, 256), **options)
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
    path = inflate_tiff_size_tags(tiled(tmp_path / "slide.tif"))
    with pytest.raises(DataError, match=r"level 0 declares 200000x200000 px in 611,524 tiles but the file holds 4"):
        check(path)


def test_an_ndpi_whose_tiles_are_virtual_is_not_counted(tmp_path: Path) -> None:
    path = inflate_tiff_size_tags(tiled(tmp_path / "ndpi-tagged.tif", extratags=NDPI_TAGS))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ndpi
    check(path)
