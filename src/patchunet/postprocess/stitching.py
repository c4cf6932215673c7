"""Tiles of a slide and the rule that gives every nucleus to exactly one of them, whole.

The slide is cut into square cores that cover it without overlap. Each tile is segmented on its
core plus a margin on every side (clipped at the slide's edge), and keeps the nuclei whose centroid
lies in its core. The margin is more than a nucleus reaches from its centroid, so a kept nucleus
lies whole in what the tile saw; one that still touches the margin's outer edge would be cut
there, and is counted and dropped.

Two neighbouring tiles see a nucleus on their common border with different context and can place
its centroid on either side. So tiles run in raster order, and a tile's nucleus that mostly covers
one its earlier neighbours kept (by half of either's area) is that nucleus again: it is dropped. A
smaller overlap is cut away from the later nucleus, so no pixel belongs to two nuclei.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

DUPLICATE_OVERLAP = 0.5
"""A nucleus overlapping an earlier tile's by this share of either one's area is a duplicate."""


@dataclasses.dataclass(frozen=True)
class StitchReport:
    kept: int
    duplicates: int
    """Dropped: an earlier neighbour kept the same nucleus."""
    cut: int
    """Dropped: centroid in the core but touching the margin's outer edge (the margin is too narrow)."""
    trimmed_pixels: int
    """Pixels also claimed by an earlier neighbour's nucleus, taken from this tile's."""


def keep_core_nuclei(
    labels: np.ndarray,
    core: tuple[int, int, int, int],
    interior_edges: tuple[bool, bool, bool, bool],
    claimed: np.ndarray,
) -> tuple[np.ndarray, StitchReport]:
    """The nuclei a tile keeps, as (H, W) labels 1..N in raster order of their first pixel.

    `labels` are the tile's instance labels over its read box; `core` is (x, y, width, height) of
    its core in that box; `interior_edges` says, for the box's (top, bottom, left, right) edge,
    whether it lies inside the slide (a nucleus touching it is cut); `claimed` holds, over the same
    box, the nuclei earlier neighbours kept (0 elsewhere).
    """
    x, y, width, height = core
    count, cols = int(labels.max()), labels.shape[1]
    ids = labels.ravel().astype(np.intp)  # once, not in each bincount
    areas = np.bincount(ids, minlength=count + 1)
    pixels = np.flatnonzero(ids)  # the nuclei's pixels, in the same order: each nucleus's sums are unchanged
    row, col = np.divmod(pixels, cols)
    with np.errstate(invalid="ignore", divide="ignore"):  # ids without pixels: no centroid, not kept
        cy = np.bincount(ids[pixels], row.astype(np.float64), count + 1) / areas
        cx = np.bincount(ids[pixels], col.astype(np.float64), count + 1) / areas
    in_core = (y <= cy) & (cy < y + height) & (x <= cx) & (cx < x + width)
    in_core[0] = False
    boxes = ndimage.find_objects(labels)
    cut = np.zeros(count + 1, bool)
    for nucleus in np.flatnonzero(in_core):
        cut[nucleus] = _touches(boxes[nucleus - 1], labels.shape, interior_edges)
    candidates = in_core & ~cut
    overlap = (labels > 0) & (claimed > 0)
    pairs, counts = np.unique(
        labels[overlap].astype(np.int64) << 32 | claimed[overlap].astype(np.int64), return_counts=True
    )
    mine, others = pairs >> 32, pairs & 0xFFFFFFFF
    claimed_areas = np.bincount(claimed.ravel())
    shares = np.maximum(counts / areas[mine], counts / claimed_areas[others])
    duplicate = np.zeros(count + 1, bool)
    duplicate[mine[shares >= DUPLICATE_OVERLAP]] = True
    duplicate &= candidates
    keep = candidates & ~duplicate
    trimmed = int(counts[keep[mine]].sum())
    kept = np.where(keep[labels] & (claimed == 0), labels, 0).astype(labels.dtype, copy=False)
    kept = relabel_sequential(kept)[0]
    return kept, StitchReport(int(kept.max()), int(duplicate.sum()), int((in_core & cut).sum()), trimmed)


def _touches(box: tuple[slice, slice], shape: tuple[int, ...], interior_edges: tuple[bool, bool, bool, bool]) -> bool:
    top, bottom, left, right = interior_edges
    rows, cols = box
    return (
        (top and rows.start == 0)
        or (bottom and rows.stop == shape[0])
        or (left and cols.start == 0)
        or (right and cols.stop == shape[1])
    )


def claimed_pixels(earlier: Iterable[tuple[int, int, np.ndarray]], box: tuple[int, int, int, int]) -> np.ndarray:
    """The nuclei earlier neighbours kept, as (height, width) labels over `box` (x, y, width,
    height) for `keep_core_nuclei`'s `claimed`: each of `earlier` is (x, y, labels), a neighbour's
    labels 1..n placed at (x, y) in the box's pixels; each nucleus gets its own id here."""
    x, y, width, height = box
    claimed = np.zeros((height, width), np.int32)
    first_id = 0
    for left, top, labels in earlier:
        rows = slice(max(top, y), min(top + labels.shape[0], y + height))
        cols = slice(max(left, x), min(left + labels.shape[1], x + width))
        if rows.start < rows.stop and cols.start < cols.stop:
            piece = labels[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
            target = claimed[rows.start - y : rows.stop - y, cols.start - x : cols.stop - x]
            np.copyto(target, piece.astype(np.int32) + first_id, where=piece > 0)
        first_id += int(labels.max(initial=0))
    return claimed
