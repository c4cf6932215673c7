"""The tile grid: squares of one size over an image or a slide level, in raster order.

Patches and sliding windows take whole tiles, the last row and column pulled back to end at the
border; a slide is cut into cores clipped at the border instead, which cover it without overlap.
"""

from __future__ import annotations

import dataclasses


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` every `stride` that cover all of [0, length).

    The last window is pulled back to end exactly at the border, so no pixel at the right or
    bottom edge is dropped and no padding is invented.
    """
    if size > length:
        raise ValueError(f"window {size} is larger than the side {length}")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@dataclasses.dataclass(frozen=True)
class Tile:
    """A tile of the grid, in pixels of the image or level it covers (a slide's tile: its core)."""

    row: int
    col: int
    x: int
    y: int
    width: int
    height: int

    def read_box(self, margin: int, level_width: int, level_height: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the core grown by `margin` on each side, within the level."""
        x0, y0 = max(0, self.x - margin), max(0, self.y - margin)
        x1 = min(level_width, self.x + self.width + margin)
        y1 = min(level_height, self.y + self.height + margin)
        return x0, y0, x1 - x0, y1 - y0


def tile_grid(shape: tuple[int, int], size: int, stride: int, *, clip: bool = False) -> list[Tile]:
    """Tiles of `size` px every `stride` px over an image of `shape` (H, W), in raster order.

    By default every tile is whole and inside the image: the last row and column are pulled back to
    end at the border (`tile_starts`), so patches and sliding windows need no padding. With `clip`,
    tiles start every `stride` px from 0 and the last row and column are cut at the border (narrower
    where the size does not divide the sides): with `stride` = `size`, a slide level's cores.
    """
    height, width = shape[0], shape[1]
    if clip:
        ys, xs = range(0, height, stride), range(0, width, stride)
    else:
        ys, xs = tile_starts(height, size, stride), tile_starts(width, size, stride)
    return [
        Tile(row, col, x, y, min(size, width - x), min(size, height - y))
        for row, y in enumerate(ys)
        for col, x in enumerate(xs)
    ]
