"""Label images as pyramidal OME-TIFF, which QuPath (Bio-Formats), napari and tifffile open.

Ids are uint32, in tiles of LABEL_TILE px, zlib-compressed. The sub-resolution levels, in SubIFDs,
are nearest-neighbour: level k is level 0 sampled every 2**k pixels (`labels[::2**k, ::2**k]`), so
ids stay ids; they halve until one tile holds a level. The OME-XML gives level 0's µm per pixel,
and every level's TIFF resolution tags its own. Pixels come tile by tile, so no level need be in
memory whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

LABEL_TILE = 512
"""Side of a TIFF tile, and of the smallest level."""
LABEL_DTYPE = np.uint32


def pyramid_shapes(shape: tuple[int, int], tile: int = LABEL_TILE) -> list[tuple[int, int]]:
    """(H, W) of each level: `shape`, then halved, rounding up as `[::2]` does, until one tile holds it."""
    shapes = [shape]
    while max(shapes[-1]) > tile:
        height, width = shapes[-1]
        shapes.append((-(-height // 2), -(-width // 2)))
    return shapes


def write_label_pyramid(
    path: Path,
    shape: tuple[int, int],
    mpp: float,
    level_tiles: Callable[[int, tuple[int, int]], Iterable[np.ndarray]],
    *,
    tile: int = LABEL_TILE,
) -> None:
    """Write an (H, W) = `shape` label image at `mpp` µm per pixel as a pyramidal OME-TIFF, atomically.

    `level_tiles(k, shape_k)` gives the tiles of level k (of `shape_k`, `pyramid_shapes`), each
    (tile, tile) uint32, in raster order, zero beyond the level's right and bottom edges.
    """
    import tifffile

    from patchunet.core.files import atomic_file

    shapes = pyramid_shapes(shape, tile)
    options = {"dtype": LABEL_DTYPE, "tile": (tile, tile), "compression": "zlib", "photometric": "minisblack"}
    scale = {"PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"}
    with atomic_file(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as writer:
        for level, level_shape in enumerate(shapes):
            if level == 0:
                layout = {"subifds": len(shapes) - 1, "metadata": {"axes": "YX", "Name": path.name, **scale}}
            else:
                layout = {"subfiletype": 1, "metadata": None}
            resolution = 1e4 / (mpp * 2**level)  # pixels per cm
            writer.write(
                level_tiles(level, level_shape),
                shape=level_shape,
                resolution=(resolution, resolution),
                resolutionunit="CENTIMETER",
                **layout,
                **options,
            )
