"""The one tile grid: whole tiles pulled back at the border (patches, windows), or cores clipped there (slides)."""

from __future__ import annotations

import numpy as np
import pytest

from patchunet.postprocess.tiling import Tile, tile_grid, tile_starts


@pytest.mark.parametrize(
    ("length", "size", "stride"), [(1000, 250, 250), (1000, 256, 256), (1000, 256, 192), (100, 100, 7), (37, 16, 5)]
)
def test_tiles_cover_every_pixel_and_stay_inside(length: int, size: int, stride: int) -> None:
    covered = np.zeros((length, length), int)
    for tile in tile_grid((length, length), size, stride):
        y, x = tile.y, tile.x
        assert (tile.height, tile.width) == (size, size)
        assert 0 <= y <= length - size and 0 <= x <= length - size
        covered[y : y + size, x : x + size] += 1
    assert covered.min() >= 1


def test_divisible_sizes_tile_without_overlap() -> None:
    assert tile_starts(1000, 250, 250) == [0, 250, 500, 750]


def test_last_tile_is_pulled_back_to_the_border() -> None:
    assert tile_starts(1000, 256, 256) == [0, 256, 512, 744]


def test_window_larger_than_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the side"):
        tile_starts(100, 128, 64)


def test_clipped_cores_cover_the_level_once_in_raster_order() -> None:
    tiles = tile_grid((700, 1000), 300, 300, clip=True)
    cover = np.zeros((700, 1000), int)
    for tile in tiles:
        cover[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width] += 1
    assert (cover == 1).all()
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)
    assert (tiles[-1].width, tiles[-1].height) == (100, 100)


def test_the_read_box_grows_by_the_margin_inside_the_level() -> None:
    assert Tile(0, 0, 0, 0, 300, 300).read_box(64, 1000, 700) == (0, 0, 364, 364)
    assert Tile(1, 1, 300, 300, 300, 300).read_box(64, 1000, 700) == (236, 236, 428, 428)
    assert Tile(2, 3, 900, 600, 100, 100).read_box(64, 1000, 700) == (836, 536, 164, 164)
