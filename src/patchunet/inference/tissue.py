"""Where a slide has tissue: stained tissue is coloured, empty glass is grey or white.

Decided on a thumbnail, by HSV saturation: H&E stains tissue pink to purple, while glass, its
background and dust are unsaturated whatever their brightness. Small specks are dropped and small
gaps inside tissue filled, so a tile is skipped only where the glass is empty.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import remove_small_holes, remove_small_objects

MIN_TISSUE_PIXELS = 16
"""Thumbnail pixels: a coloured speck smaller than this is dust, not tissue."""


def tissue_mask(thumbnail: np.ndarray, min_saturation: float) -> np.ndarray:
    """(H, W) bool: True where the (H, W, 3) uint8 RGB thumbnail shows tissue, i.e. its saturation
    is at least `min_saturation` (0 to 1), after removing specks and filling small holes."""
    saturation = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)[..., 1]
    mask = saturation >= round(min_saturation * 255)
    mask = remove_small_objects(mask, max_size=MIN_TISSUE_PIXELS - 1)
    return remove_small_holes(mask, max_size=MIN_TISSUE_PIXELS * 4)
