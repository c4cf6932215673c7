"""Which tiles of a slide to segment, and at which level: the scale, the tissue and the tile grid.

The level read is the one nearest the model's scale; tissue is found on a thumbnail, and only the
tiles of that level's grid with some tissue under their core are segmented.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING

from patchunet.core.errors import DataError, PatchUNetError

if TYPE_CHECKING:
    import numpy as np

    from patchunet.core.config import SlideConfig
    from patchunet.io.slides import Slide
    from patchunet.postprocess.tiling import Tile


TISSUE_GROWTH = 2
"""Thumbnail pixels the tissue mask grows by before the network skips what it leaves: one for the
thumbnail's rounded size (its rows and columns may be up to a pixel off the level's), one for tissue
too faint to count next to a thumbnail pixel that does."""


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """The tiles of one slide to segment, and the thumbnail their tissue was found on."""

    level: int
    downsample: float
    """Level-0 pixels per pixel of the level read."""
    level_mpp: float
    """µm per pixel of the level read."""
    width: int
    height: int
    """Of the level read, in its pixels."""
    tiles: list[Tile]
    """The whole grid of the level, in raster order."""
    tissue_tiles: list[Tile]
    """Those with tissue under their core: the ones segmented."""
    thumbnail: np.ndarray
    """(h, w, 3) uint8 picture of the whole slide."""
    thumbnail_scale: float
    """Level-0 pixels per thumbnail pixel."""
    tissue: np.ndarray
    """(h, w) bool over the thumbnail."""

    @property
    def tissue_megapixels(self) -> float:
        """The tissue's area in level-0 megapixels."""
        return float(self.tissue.sum()) * self.thumbnail_scale**2 / 1e6

    @functools.cached_property
    def grown_tissue(self) -> np.ndarray:
        """`tissue` grown by TISSUE_GROWTH thumbnail pixels (`tissue_in`)."""
        import cv2
        import numpy as np

        side = 2 * TISSUE_GROWTH + 1
        return cv2.dilate(self.tissue.view(np.uint8), np.ones((side, side), np.uint8)) > 0

    def tissue_in(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """(height, width) bool over the level read's pixels of `box` (x, y, width, height): where the
        thumbnail shows tissue, grown by TISSUE_GROWTH thumbnail pixels; the rest is glass the
        network can skip (`slide.skip_glass`)."""
        import numpy as np

        x, y, width, height = box
        scale = self.downsample / self.thumbnail_scale  # thumbnail pixels per level pixel
        grown = self.grown_tissue
        rows = np.minimum(np.floor((y + np.arange(height)) * scale).astype(np.intp), grown.shape[0] - 1)
        cols = np.minimum(np.floor((x + np.arange(width)) * scale).astype(np.intp), grown.shape[1] - 1)
        return grown[np.ix_(rows, cols)]


def plan_tiles(slide: Slide, mpp: float, model_mpp: float, slide_cfg: SlideConfig) -> TilePlan:
    """The tile plan of `slide` at `mpp` µm per level-0 pixel for a model at `model_mpp`; refused in
    one line if its tiles cannot be segmented at the model's scale (`check_tile_scale`)."""
    from patchunet.inference.tissue import tissue_mask
    from patchunet.io.slides import level_for_scale, thumbnail
    from patchunet.postprocess.tiling import tile_grid

    level = level_for_scale(slide, mpp, model_mpp)
    downsample = slide.level_downsamples[level]
    level_mpp = mpp * downsample
    check_tile_scale(slide.path, slide_cfg.tile_size, level_mpp, model_mpp)
    width, height = slide.level_dimensions[level]
    picture, picture_scale = thumbnail(slide, slide_cfg.thumbnail_max_side)
    tissue = tissue_mask(picture, slide_cfg.tissue_saturation)
    tiles = tile_grid((height, width), slide_cfg.tile_size, slide_cfg.tile_size, clip=True)
    scale = downsample / picture_scale  # thumbnail pixels per level pixel
    tissue_tiles = [tile for tile in tiles if has_tissue(tissue, tile, scale)]
    return TilePlan(level, downsample, level_mpp, width, height, tiles, tissue_tiles, picture, picture_scale, tissue)


def slide_scale(slide: Slide, given_mpp: float | None) -> tuple[float, str]:
    """µm per level-0 pixel and where it comes from: "--mpp", else "slide"; refused without either."""
    from patchunet.io.scale import PLAUSIBLE_MPP

    if given_mpp is not None:
        if not PLAUSIBLE_MPP[0] <= given_mpp <= PLAUSIBLE_MPP[1]:
            raise PatchUNetError(
                f"--mpp {given_mpp:g}: not a microscope's scale; µm per level-0 pixel lies between "
                f"{PLAUSIBLE_MPP[0]:g} and {PLAUSIBLE_MPP[1]:g} (40x is about 0.25)"
            )
        return given_mpp, "--mpp"
    if slide.mpp is None:
        raise DataError(slide.path, "records no scale (µm per pixel): pass --mpp (40x is about 0.25)")
    return slide.mpp, "slide"


def check_tile_scale(path: Path, tile_size: int, level_mpp: float, model_mpp: float) -> None:
    """Refuse in one line a level too far from the model's scale, or one at which a tile, resampled
    to the model's scale, exceeds MAX_IMAGE_PIXELS: the fix there is a smaller slide.tile_size."""
    from patchunet.io.images import MAX_IMAGE_PIXELS
    from patchunet.io.scale import check_scale, resampled_shape

    check_scale((1, 1), level_mpp, model_mpp, str(path))
    height, width = resampled_shape((tile_size, tile_size), level_mpp, model_mpp)
    if height * width > MAX_IMAGE_PIXELS:
        largest = math.floor(math.sqrt(MAX_IMAGE_PIXELS) * model_mpp / level_mpp)
        raise PatchUNetError(
            f"{path}: at {level_mpp:g} µm/px a {tile_size} px tile becomes {width}x{height} px at the model's "
            f"{model_mpp:g} µm/px, over {MAX_IMAGE_PIXELS / 1e6:g} megapixels; set params.yaml slide.tile_size "
            f"to {largest} or less"
        )


def has_tissue(tissue: np.ndarray, tile: Tile, scale: float) -> bool:
    """Whether any tissue pixel of the thumbnail lies under the tile's core (`scale`: thumbnail
    pixels per level pixel)."""
    rows = slice(math.floor(tile.y * scale), math.ceil((tile.y + tile.height) * scale))
    cols = slice(math.floor(tile.x * scale), math.ceil((tile.x + tile.width) * scale))
    return bool(tissue[rows, cols].any())
