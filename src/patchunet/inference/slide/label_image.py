"""A slide's nuclei as a label image: each pixel of the level read holds its nucleus's id (the
nucleus table's `nucleus`, 1..N in tile order, as in the GeoJSON), 0 elsewhere, written as a
pyramidal OME-TIFF (io/label_image.py).

The ids are filled from the tile store's outlines, which run along pixel edges: filling them gives
back exactly the pixels each tile kept. Each level is filled directly, pixel (r, c) of level k
taking the id of the level-read pixel (r, c) * 2**k, whose centre is tested against the outlines,
so no level is resampled from another. Each level streams the tile store once; memory holds one
image tile and the outlines of the nuclei near one row of image tiles.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from patchunet.io.label_image import LABEL_DTYPE, LABEL_TILE

if TYPE_CHECKING:
    from patchunet.inference.slide.plan import TilePlan
    from patchunet.io.geojson import FeatureShape
    from patchunet.postprocess.tiling import Tile


@dataclasses.dataclass(frozen=True)
class Outline:
    """One nucleus at one level: the level's pixels it may hold, and its polygons in the level's
    pixel-corner coordinates."""

    nucleus: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    polygons: FeatureShape


def write_label_image(
    path: Path, plan: TilePlan, margin: int, finished: Callable[[], Iterable[tuple[Tile, dict]]]
) -> None:
    """Write the label image of a slide segmented by `plan`, with tiles read `margin` px beyond
    their core; `finished()` gives, on each call, its finished tiles (as the tile store saved them)
    in raster order, each with its tile."""
    from patchunet.io.label_image import write_label_pyramid

    def level_tiles(level: int, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        return label_tiles(finished(), shape, 2**level, margin)

    write_label_pyramid(path, (plan.height, plan.width), plan.level_mpp, level_tiles)


def label_tiles(
    finished: Iterable[tuple[Tile, dict]], shape: tuple[int, int], step: int, margin: int, size: int = LABEL_TILE
) -> Iterator[np.ndarray]:
    """The (size, size) uint32 tiles, in raster order, of the (H, W) = `shape` level that samples
    the level read every `step` pixels. A row of tiles is filled once every finished tile that can
    reach it (its core plus `margin`) is read."""
    source = iter(finished)
    waiting = next(source, None)
    nucleus = 0
    pending: list[Outline] = []
    for top in range(0, shape[0], size):
        while waiting is not None and waiting[0].y - margin < (top + size) * step:
            for feature in waiting[1]["features"]:
                nucleus += 1
                outline = sampled_outline(nucleus, feature["bbox"], feature["geometry"], step)
                if outline is not None:
                    pending.append(outline)
            waiting = next(source, None)
        columns = defaultdict(list)
        for outline in pending:
            if outline.rows[0] < top + size:
                for column in range(outline.cols[0] // size, (outline.cols[1] - 1) // size + 1):
                    columns[column].append(outline)
        for column in range(-(-shape[1] // size)):
            yield filled_tile(columns[column], top, column * size, size)
        pending = [outline for outline in pending if outline.rows[1] > top + size]


def sampled_outline(nucleus: int, bbox: list[int], geometry: dict, step: int) -> Outline | None:
    """Nucleus `nucleus` at the level sampling every `step` pixels, from its box (min x, min y,
    max x, max y; pixels of the level read, max excluded) and GeoJSON geometry; None where no
    sampled pixel lies in its box. Vertices move so that the level's pixel (r, c) has its centre
    where the level read's pixel (r, c) * step has its own: x -> (x - 0.5) / step + 0.5."""
    min_x, min_y, max_x, max_y = bbox
    rows, cols = (-(-min_y // step), -(-max_y // step)), (-(-min_x // step), -(-max_x // step))
    if rows[0] == rows[1] or cols[0] == cols[1]:
        return None
    # the tile store's own outlines: trusted, so not checked as a GeoJSON file from elsewhere is
    coordinates = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    polygons = [[(np.asarray(ring, np.float64) - 0.5) / step + 0.5 for ring in rings] for rings in coordinates]
    return Outline(nucleus, rows, cols, polygons)


def filled_tile(outlines: list[Outline], top: int, left: int, size: int) -> np.ndarray:
    """The (size, size) uint32 tile at (`left`, `top`) of a level, each of `outlines` filled with its id."""
    labels = np.zeros((size, size), LABEL_DTYPE)
    for outline in outlines:
        for exterior, *holes in outline.polygons:
            pixels = _ring_pixels(exterior, top, left, size)
            for hole in holes:
                pixels = np.setdiff1d(pixels, _ring_pixels(hole, top, left, size), assume_unique=True)
            labels.flat[pixels] = outline.nucleus
    return labels


def _ring_pixels(ring: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """Flat indices into the (size, size) tile at (`left`, `top`) of the pixels whose centre lies
    inside `ring`, (K, 2) (x, y) vertices in pixel-corner coordinates: io/geojson.py's rule, QuPath's."""
    from skimage.draw import polygon

    # the pixel centre (c + 0.5, r + 0.5) is skimage's point (r, c): shift the vertices by half a pixel
    rows, cols = polygon(ring[:, 1] - top - 0.5, ring[:, 0] - left - 0.5, shape=(size, size))
    return np.ravel_multi_index((rows, cols), (size, size))
