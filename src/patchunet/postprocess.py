"""Probabilities to nucleus instances: threshold, clean up, then split touching nuclei.

A binary U-Net cannot tell two touching nuclei apart, so instances come from a watershed on the
distance transform of the foreground: each nucleus is a distance peak, and the watershed lines
follow the necks between peaks. The distance map is first smoothed (`distance_sigma`), and
markers are its h-maxima (peaks at least `watershed_h` pixels above their saddle), so a ragged
outline does not split one nucleus in two. The defaults were chosen on the validation images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima, remove_small_holes, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from patchunet.masks import label_dtype


def instances_from_probabilities(
    probabilities: np.ndarray,
    *,
    threshold: float,
    min_nucleus_area: int,
    max_hole_area: int,
    distance_sigma: float,
    watershed_h: float,
) -> np.ndarray:
    """(H, W) probabilities -> (H, W) instance labels 1..N (uint16 or uint32), 0 = background.

    Objects of fewer than `min_nucleus_area` pixels are dropped, before and after splitting;
    holes up to `max_hole_area` pixels are filled.
    """
    foreground = probabilities > threshold
    foreground = remove_small_objects(foreground, max_size=min_nucleus_area - 1) if min_nucleus_area > 1 else foreground
    foreground = remove_small_holes(foreground, max_size=max_hole_area) if max_hole_area > 0 else foreground
    labels = split_touching(foreground, distance_sigma, watershed_h)
    too_small = np.bincount(labels.ravel()) < min_nucleus_area  # splitting may leave small pieces
    too_small[0] = False
    labels[too_small[labels]] = 0
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(label_dtype(int(labels.max())))


def split_touching(foreground: np.ndarray, distance_sigma: float, watershed_h: float) -> np.ndarray:
    """Label a boolean mask, splitting touching blobs along the necks of their distance transform."""
    distance = ndimage.distance_transform_edt(foreground)
    if distance_sigma > 0:
        distance = ndimage.gaussian_filter(distance, distance_sigma)
    # h_maxima finds plateaus with 8-connectivity: label them the same way, one marker each
    markers, count = ndimage.label(h_maxima(distance, watershed_h), structure=np.ones((3, 3)))
    # a blob thinner than h has no h-maximum: it keeps its own component as its marker
    components, _ = ndimage.label(foreground)
    has_marker = np.zeros(components.max() + 1, bool)
    has_marker[components[markers > 0]] = True
    orphan = ~has_marker[components] & foreground
    markers[orphan] = components[orphan] + count
    return watershed(-distance, markers, mask=foreground).astype(np.int64)
