"""A slide's nuclei as a label image: each pixel of the level read holds its nucleus's id (the
nucleus table's `nucleus`, 1..N in tile order, as in the GeoJSON), 0 elsewhere, written as a
pyramidal OME-TIFF (io/label_image.py).

The ids are painted from the labels each finished tile kept (tile_store.py's `TileLabels`, the
pixels its GeoJSON outlines hold), shifted by the nuclei of the tiles before it, in tile order so
that a later tile wins where two overlap, as in the GeoJSON filled in order. Pixel (r, c) of level
k is the level read's pixel (r, c) * 2**k, so no level is resampled from another. Each row of
image tiles reads the tiles that can reach it, once per level; memory holds that row and the
labels of the tiles reaching it (about two rows of slide tiles at level 0, fewer pixels above).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from patchunet.io.label_image import LABEL_DTYPE, LABEL_TILE

if TYPE_CHECKING:
    from patchunet.inference.slide.plan import TilePlan
    from patchunet.inference.slide.tile_store import TileLabels, TileStore

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels of the level read."""


def write_label_image(path: Path, plan: TilePlan, margin: int, store: TileStore) -> None:
    """Write the label image of a slide segmented by `plan`, with tiles read `margin` px beyond
    their core, from `store`, which holds all its tissue tiles finished."""
    from patchunet.io.label_image import write_label_pyramid

    tiles = plan.tissue_tiles
    boxes = [tile.read_box(margin, plan.width, plan.height) for tile in tiles]
    counts = store.nucleus_counts(tiles)
    before = [int(count) for count in np.cumsum([0, *counts[:-1]])]

    def read(index: int) -> TileLabels:
        return store.labels(tiles[index].row, tiles[index].col)

    def level_tiles(level: int, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        return label_tiles(boxes, counts, before, read, shape, 2**level)

    write_label_pyramid(path, (plan.height, plan.width), plan.level_mpp, level_tiles)


def label_tiles(
    boxes: Sequence[Box],
    counts: Sequence[int],
    before: Sequence[int],
    read: Callable[[int], TileLabels],
    shape: tuple[int, int],
    step: int,
    size: int = LABEL_TILE,
) -> Iterator[np.ndarray]:
    """The (size, size) uint32 tiles, in raster order, of the (H, W) = `shape` level that samples
    the level read every `step` pixels. Slide tile i, in raster order, lies within `boxes[i]`, kept
    `counts[i]` nuclei, has `before[i]` nuclei in the tiles before it, and `read(i)` gives its
    labels; it is read when the first row of image tiles it reaches comes, and let go after the
    last (the boxes' tops never decrease)."""
    columns = -(-shape[1] // size)
    held: dict[int, TileLabels] = {}
    waiting = 0
    for top in range(0, shape[0], size):
        start, stop = top * step, (top + size) * step  # the level read's rows this row of image tiles samples
        while waiting < len(boxes) and boxes[waiting][1] < stop:
            if counts[waiting] and boxes[waiting][1] + boxes[waiting][3] > start:
                held[waiting] = sampled(read(waiting), step)
            waiting += 1
        row = np.zeros((size, columns * size), LABEL_DTYPE)
        for index in sorted(held):
            paint(row, top, held[index], before[index])
        for column in range(columns):
            yield np.ascontiguousarray(row[:, column * size : (column + 1) * size])
        held = {index: labels for index, labels in held.items() if boxes[index][1] + boxes[index][3] > stop}


def sampled(labels: TileLabels, step: int) -> TileLabels:
    """A tile's labels at the level sampling the level read every `step` pixels: the level's pixel
    (r, c) is the level read's (r, c) * step, whatever the tile's offset."""
    from patchunet.inference.slide.tile_store import TileLabels

    if step == 1:
        return labels
    row, col = -(-labels.y // step), -(-labels.x // step)
    pixels = labels.labels[row * step - labels.y :: step, col * step - labels.x :: step].copy()
    return TileLabels(col, row, pixels, labels.count)


def paint(row: np.ndarray, top: int, labels: TileLabels, before: int) -> None:
    """Paint a tile's nuclei, numbered after the `before` of the tiles before it, over the row of
    image tiles whose top is level row `top` (`row`: (size, W') uint32)."""
    first, last = max(labels.y, top), min(labels.bottom, top + row.shape[0])
    if first >= last:
        return
    pixels = labels.labels[first - labels.y : last - labels.y]
    target = row[first - top : last - top, labels.x : labels.x + pixels.shape[1]]
    nucleus = pixels != 0
    target[nucleus] = pixels[nucleus].astype(LABEL_DTYPE) + before
