"""Predicted maps to nucleus instances: threshold, clean up, then split touching nuclei.

A foreground-only U-Net (head `none`) cannot tell two touching nuclei apart, so instances come
from a watershed on the distance transform of the foreground: each nucleus is a distance peak,
and the watershed lines follow the necks between peaks. The distance map is first smoothed
(`distance_sigma`), and markers are its h-maxima (peaks at least `watershed_h` pixels above their
saddle), so a ragged outline does not split one nucleus in two.

An instance head places the markers and the lines itself (marker-controlled watershed):
- `boundary`: markers where foreground x (1 - boundary) > `marker_threshold`, flooded over that score;
- `distance`: markers where the predicted normalised distance > `marker_threshold`, flooded over it;
- `hover`: HoVer-Net's: the Sobel gradients of the offset maps are high between nuclei; markers
  where foreground minus gradient > `marker_threshold`, flooded over the smoothed foreground x
  (1 - gradient).
Markers under `min_marker_area` pixels are dropped; a blob left without a marker is one nucleus.
Every value was chosen on the validation images (benchmarks/postprocess_on_val.py).

Memory: a whole-image h-maxima (a grey reconstruction) holds about 25 float32-map sizes at
once, and the distance transform about 8; both are local to a blob, so they run one blob's
bounding box at a time, with results identical to the whole-image calls. The peak is then
about 10 float32-map sizes (the float64 distance map, int32 markers, the watershed's copies).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima, remove_small_holes, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from patchunet.config import EvalConfig, InstanceHead

HOVER_SOBEL_SIZE = 21
"""Sobel kernel of HoVer-Net's post-processing on its offset maps, for 40x images (its own value)."""


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
    foreground = clean_foreground(probabilities, threshold, min_nucleus_area, max_hole_area)
    return finished_labels(split_touching(foreground, distance_sigma, watershed_h), min_nucleus_area)


def instances_from_maps(maps: np.ndarray, head: InstanceHead, cfg: EvalConfig) -> np.ndarray:
    """(C, H, W) activated maps of a model with instance `head` -> (H, W) instance labels 1..N."""
    if head == "none":
        return instances_from_probabilities(
            maps[0],
            threshold=cfg.threshold,
            min_nucleus_area=cfg.min_nucleus_area,
            max_hole_area=cfg.max_hole_area,
            distance_sigma=cfg.distance_sigma,
            watershed_h=cfg.watershed_h,
        )
    foreground = clean_foreground(maps[0], cfg.threshold, cfg.min_nucleus_area, cfg.max_hole_area)
    if head == "boundary":
        score = maps[0] * (1 - maps[1])
        elevation = -score
    elif head == "distance":
        score = maps[1].copy()
        if cfg.distance_sigma > 0:
            ndimage.gaussian_filter(score, cfg.distance_sigma, output=score)
        elevation = -score
    elif head == "hover":
        score, elevation = hover_energy(maps, foreground, cfg.distance_sigma)
    else:
        raise ValueError(f"unknown instance head {head!r}")
    markers, _ = ndimage.label((score > cfg.marker_threshold) & foreground)
    if cfg.min_marker_area > 1:
        markers = remove_small_objects(markers, max_size=cfg.min_marker_area - 1)
    markers = with_orphan_blobs(markers.astype(np.int32, copy=False), foreground, int(markers.max()))
    labels = watershed(elevation, markers, mask=foreground).astype(np.int32, copy=False)
    return finished_labels(labels, cfg.min_nucleus_area)


def hover_energy(maps: np.ndarray, foreground: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """HoVer-Net's marker score and watershed elevation from (foreground, x offset, y offset) maps."""
    edges = []
    for channel, (dx, dy) in ((1, (1, 0)), (2, (0, 1))):
        offset = cv2.normalize(maps[channel], None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
        # offsets rise across a nucleus and fall steeply where two nuclei meet: the most negative
        # gradient marks the lines between nuclei
        gradient = cv2.Sobel(offset, cv2.CV_32F, dx, dy, ksize=HOVER_SOBEL_SIZE)
        edges.append(1 - cv2.normalize(gradient, None, 0, 1, cv2.NORM_MINMAX, dtype=cv2.CV_32F))
    edges = np.maximum(*edges) - (1 - foreground)
    np.clip(edges, 0, None, out=edges)
    elevation = (1 - edges) * foreground
    if sigma > 0:
        elevation = ndimage.gaussian_filter(elevation.astype(np.float32), sigma)
    return foreground - edges, -elevation


def clean_foreground(probabilities: np.ndarray, threshold: float, min_area: int, max_hole_area: int) -> np.ndarray:
    """Pixels above `threshold`, without objects under `min_area` pixels or holes up to `max_hole_area`."""
    foreground = probabilities > threshold
    foreground = remove_small_objects(foreground, max_size=min_area - 1) if min_area > 1 else foreground
    return remove_small_holes(foreground, max_size=max_hole_area) if max_hole_area > 0 else foreground


def finished_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop the pieces under `min_area` pixels that splitting may leave, and number the rest 1..N."""
    too_small = np.bincount(labels.ravel()) < min_area
    too_small[0] = False
    labels[too_small[labels]] = 0
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.promote_types(np.min_scalar_type(labels.max()), np.uint16))


def with_orphan_blobs(markers: np.ndarray, foreground: np.ndarray, count: int) -> np.ndarray:
    """`markers` (int32, ids 1..count) plus, for each blob of `foreground` without one, the whole
    blob as its own marker: a nucleus with no marker is still one nucleus, not background."""
    components, _ = ndimage.label(foreground)
    has_marker = np.zeros(components.max() + 1, bool)
    has_marker[components[markers > 0]] = True
    orphan = ~has_marker[components] & foreground
    markers[orphan] = components[orphan] + count
    return markers


def split_touching(foreground: np.ndarray, distance_sigma: float, watershed_h: float) -> np.ndarray:
    """(H, W) bool mask -> (H, W) int32 labels, touching blobs split along the necks of their distance map."""
    distance = distance_by_blob(foreground)
    if distance_sigma > 0:
        ndimage.gaussian_filter(distance, distance_sigma, output=distance)
    # h_maxima finds plateaus with 8-connectivity: label them the same way, one marker each
    markers, count = ndimage.label(h_maxima_by_blob(distance, watershed_h), structure=np.ones((3, 3)))
    # a blob thinner than h has no h-maximum: it keeps its own component as its marker
    markers = with_orphan_blobs(markers, foreground, count)
    np.negative(distance, out=distance)  # the watershed floods from the peaks down
    return watershed(distance, markers, mask=foreground).astype(np.int32, copy=False)


def distance_by_blob(foreground: np.ndarray) -> np.ndarray:
    """(H, W) float64 Euclidean distance of each foreground pixel to the background, as
    `ndimage.distance_transform_edt`, computed in each blob's bounding box grown by one pixel.

    The nearest background pixel of a blob's pixel lies in that box: every pixel nearer than it is
    foreground and reaches the pixel through nearer ones, so it belongs to the same (4-connected) blob.
    """
    distance = np.zeros(foreground.shape, np.float64)
    blobs, _ = ndimage.label(foreground)
    for blob, box in enumerate(ndimage.find_objects(blobs), start=1):
        box = _grown(box, foreground.shape)
        inside = blobs[box] == blob
        distance[box][inside] = ndimage.distance_transform_edt(foreground[box])[inside]
    return distance


def h_maxima_by_blob(image: np.ndarray, h: float) -> np.ndarray:
    """(H, W) uint8 `skimage.morphology.h_maxima` of a non-negative (H, W) float map, computed in
    the bounding box of each 8-connected region where it is positive.

    A region's reconstruction only sees the rest of the image through pixels of value 0, so the
    rest can raise it to at most min(highest seed, 0): a copy of the map's maximum, set apart from
    the region by zeros in each box, stands in for it exactly.
    """
    maxima = np.zeros(image.shape, np.uint8)
    if h > np.ptp(image):  # h_maxima's own shortcut, on the whole image
        return maxima
    peak = image.max()
    regions, _ = ndimage.label(image > 0, structure=np.ones((3, 3)))
    for region, box in enumerate(ndimage.find_objects(regions), start=1):
        inside = regions[box] == region
        crop = np.pad(np.where(inside, image[box], 0), 2)
        crop[0, 0] = peak
        maxima[box][inside] = h_maxima(crop, h)[2:-2, 2:-2][inside]
    return maxima


def _grown(box: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[slice, slice]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape, strict=True))
