"""Instance-head targets: the foreground, then the head's maps, made from a patch's instance labels.

Made after augmentation, so they always agree with the labels; model/heads.py describes each head.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from patchunet.core.config import InstanceHead

CONTACT_RADIUS = 2
"""A pixel is a contact when nuclei of two different ids lie within this many pixels (Chebyshev)."""


def make_targets(labels: np.ndarray, head: InstanceHead, contact: bool = False) -> np.ndarray:
    """(H, W) instance ids -> (C, H, W) float32 targets: the foreground, then the head's maps, then
    with `contact` the `contact_map` as the last channel."""
    targets = head_targets(labels, head)
    if contact:
        return np.concatenate([targets, contact_map(labels)[None]])
    return targets


def head_targets(labels: np.ndarray, head: InstanceHead) -> np.ndarray:
    """(H, W) instance ids -> (1 + HEAD_CHANNELS[head], H, W) float32: the foreground, then the head's maps."""
    foreground = (labels > 0).astype(np.float32)
    if head == "none":
        return foreground[None]
    if head == "boundary":
        return np.stack([foreground, find_boundaries(labels, mode="inner").astype(np.float32)])
    if head == "distance":
        return np.stack([foreground, normalised_distance(labels)])
    if head == "hover":
        return np.concatenate([foreground[None], centre_offsets(labels)])
    raise ValueError(f"unknown instance head {head!r}")


def contact_map(labels: np.ndarray) -> np.ndarray:
    """(H, W) instance ids -> (H, W) float32, 1 where the (2 * CONTACT_RADIUS + 1)-square around a
    pixel holds two different nuclei: the gaps between touching nuclei and their shared borders."""
    size = 2 * CONTACT_RADIUS + 1
    ids = labels.astype(np.int64)
    largest = ndimage.maximum_filter(ids, size=size, mode="nearest")
    # background set above every id, so the minimum filter finds the smallest nucleus id near the pixel
    smallest = ndimage.minimum_filter(np.where(ids > 0, ids, ids.max() + 1), size=size, mode="nearest")
    return (smallest < largest).astype(np.float32)


def normalised_distance(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32: each nucleus pixel's distance to the nearest pixel outside its nucleus,
    divided by the largest such distance in the nucleus (so 1 at every nucleus's centre)."""
    distance = np.zeros(labels.shape, np.float32)
    for nucleus, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = labels[box] == nucleus
        local = ndimage.distance_transform_edt(inside)
        distance[box][inside] = (local[inside] / local.max()).astype(np.float32)
    return distance


def centre_offsets(labels: np.ndarray) -> np.ndarray:
    """(2, H, W) float32 HoVer-Net maps: x then y offset of each nucleus pixel from its nucleus's
    centre of mass, divided per nucleus and per side by the largest offset (so in [-1, 1])."""
    offsets = np.zeros((2, *labels.shape), np.float32)
    for nucleus, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ys, xs = np.nonzero(labels[box] == nucleus)
        for channel, coords in ((0, xs), (1, ys)):
            shifted = coords - coords.mean()
            for side in (shifted < 0, shifted > 0):
                if side.any():
                    shifted[side] /= np.abs(shifted[side]).max()
            offsets[channel][box][ys, xs] = shifted
    return offsets
