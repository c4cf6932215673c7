"""Drawing on an H&E image: the colours of every picture and QuPath export, and nucleus contours."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

GREEN = (0, 220, 0)
RED = (255, 40, 40)
BLUE = (40, 120, 255)
YELLOW = (255, 230, 0)
"""Matched nucleus, unmatched prediction (false positive), missed nucleus, plain prediction."""


def draw_contours(
    image: np.ndarray,
    labels: np.ndarray,
    color: tuple[int, int, int],
    ids: np.ndarray | None = None,
    opacity: float = 1.0,
) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 image with the outlines of `labels` (only `ids`, if given)."""
    selected = labels if ids is None else np.where(np.isin(labels, ids), labels, 0)
    edges = find_boundaries(selected, mode="inner")
    out = image.copy()
    out[edges] = ((1 - opacity) * out[edges] + opacity * np.asarray(color)).astype(np.uint8)
    return out
