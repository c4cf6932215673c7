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
Every value was chosen on the validation images (benchmarks.experiments.postprocess_on_val).

Speed and memory: the `none` head's splitting gives, to the bit, what the straightforward
whole-image calls give (the tests compare them), in a fraction of their time and memory:
- the distance transform is OpenCV's exact one, brought back to SciPy's float64 values;
- the h-maxima (a whole-image grey reconstruction holds about 25 float32-map sizes, and took most
  of the time) are decided per blob: all blobs at once where a blob has one peak; one candidate
  peak at a time, in its blob's bounding box, for blobs with a few; and with one reconstruction
  per region, in its bounding box, for the peaks of blobs with many (one at a time, the cost would
  grow with blob area times peaks: noisy maps, from an early model or a slide unlike the training
  data, have blobs the size of the image with thousands of peaks);
- the watershed floods only the blobs holding several markers, each in its bounding box.
So the time stays near-linear in the pixels whatever the maps look like. With the default model's
maps the peak is about 10 float32-map sizes (the float64 distance map and its h-maxima seeds,
int32 blob labels), and a 1000x1000 image takes about 0.1 s on two cores; noisy maps, whose
regions span the image, cost a whole-image reconstruction: about 1 s and 35 float32-map sizes, as
the straightforward calls (benchmarks.perf.postprocess_speed measures both kinds of maps).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import watershed

from patchunet.core.config import EvalConfig, InstanceHead

HOVER_SOBEL_SIZE = 21
"""Sobel kernel of HoVer-Net's post-processing on its offset maps, for 40x images (its own value)."""

EIGHT_NEIGHBOURS = np.ones((3, 3), np.uint8)
"""8-connectivity, as `h_maxima` sees plateaus: a structure for `ndimage.label`, a kernel for `cv2.dilate`."""

LOWER_PEAKS_ONE_BY_ONE = 8
"""A blob's lower peaks are checked one at a time, each labelling the blob's box, up to this many;
beyond, one reconstruction of their region decides them all (peaks x box area against one sort)."""

EXACT_DISTANCE_LIMIT = 1024
"""Pixels: OpenCV's float32 distances below this square back to their exact integer squares (with a margin)."""


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
    """Pixels above `threshold`, without objects under `min_area` pixels or holes up to `max_hole_area`
    (4-connected, as skimage's remove_small_objects and remove_small_holes count them)."""
    foreground = probabilities > threshold
    foreground = large_components(foreground, min_area) if min_area > 1 else foreground
    return ~large_components(~foreground, max_hole_area + 1) if max_hole_area > 0 else foreground


def large_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """(H, W) bool: the 4-connected components of (H, W) bool `mask` of at least `min_area` pixels."""
    _, components = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    large = np.bincount(components.ravel()) >= min_area
    large[0] = False  # OpenCV's label 0 is the pixels outside `mask`
    return np.take(large, components)


def finished_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop the pieces under `min_area` pixels that splitting may leave, and number the rest 1..N in
    the order of their ids (as `relabel_sequential`)."""
    kept = np.bincount(labels.ravel()) >= min_area
    kept[0] = False
    ids = np.cumsum(kept) * kept
    return np.take(ids.astype(np.promote_types(np.min_scalar_type(ids.max()), np.uint16)), labels)


def with_orphan_blobs(markers: np.ndarray, foreground: np.ndarray, count: int) -> np.ndarray:
    """`markers` (int32, ids 1..count) plus, for each blob of `foreground` without one, the whole
    blob as its own marker: a nucleus with no marker is still one nucleus, not background."""
    components, _ = ndimage.label(foreground)
    has_marker = np.zeros(components.max() + 1, bool)
    has_marker[components[markers > 0]] = True
    orphan = ~has_marker[components] & foreground
    markers[orphan] = components[orphan] + count
    return markers


@dataclasses.dataclass(frozen=True)
class Blobs:
    """The 4-connected components of a foreground: (H, W) int32 labels 1..N and their bounding boxes."""

    labels: np.ndarray
    boxes: list[tuple[slice, slice]]

    @classmethod
    def of(cls, foreground: np.ndarray) -> Blobs:
        labels, _ = ndimage.label(foreground)
        return cls(labels, ndimage.find_objects(labels))

    def inside(self, blob: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """The bounding box of `blob` (1..N) and the mask of its pixels there."""
        box = self.boxes[blob - 1]
        return box, self.labels[box] == blob


def split_touching(foreground: np.ndarray, distance_sigma: float, watershed_h: float) -> np.ndarray:
    """(H, W) bool mask -> (H, W) int32 labels, touching blobs split along the necks of their distance map."""
    blobs = Blobs.of(foreground)
    distance = distance_by_blob(foreground)
    if distance_sigma > 0:
        ndimage.gaussian_filter(distance, distance_sigma, output=distance)
    # h_maxima finds plateaus with 8-connectivity: label them the same way, one marker each
    markers, count = ndimage.label(h_maxima_by_blob(distance, watershed_h, blobs), structure=EIGHT_NEIGHBOURS)
    return watershed_by_blob(distance, markers, count, blobs)


def distance_by_blob(foreground: np.ndarray) -> np.ndarray:
    """(H, W) float64 Euclidean distance of each foreground pixel to the background, equal to
    `ndimage.distance_transform_edt` (the name is that of the per-blob loop it replaced).

    OpenCV's exact transform is several times faster but float32. Its values are square roots of
    integers, which squaring and rounding recover exactly below 2**22 (distances under 2048), and
    SciPy's values are the float64 square roots of those integers.
    """
    if foreground.all():  # no background: SciPy's own convention
        return ndimage.distance_transform_edt(foreground)
    distance = cv2.distanceTransform(foreground.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if distance.max() >= EXACT_DISTANCE_LIMIT:
        return ndimage.distance_transform_edt(foreground)
    squared = np.square(distance, dtype=np.float64)
    return np.sqrt(np.rint(squared, out=squared), out=squared)


def h_maxima_by_blob(image: np.ndarray, h: float, blobs: Blobs) -> np.ndarray:
    """(H, W) uint8 `skimage.morphology.h_maxima(image, h)` of a non-negative (H, W) float map, to the
    bit, decided per blob of `blobs` (the 4-connected components of a foreground).

    h_maxima keeps pixel p iff `image[p] - rec[p] >= h` (in its float arithmetic), rec being the grey
    reconstruction of its seed `image - h - eps` under `image`; that is iff no pixel of C (the
    8-connected component of {image > t} around p, t the highest value with `image[p] - t >= h`)
    has a seed above t. So:
    - a pixel with a neighbour whose seed is above t is out: all but a few candidates per blob;
    - if t is at least the blob's rim (its highest outside neighbour), C stays in the blob, and C's
      highest pixel is a candidate: t at least the seed of the blob's highest candidate keeps p in;
    - the other candidates (the lower peaks of blobs with several) are settled in their blob's box,
      one at a time, in blobs with up to LOWER_PEAKS_ONE_BY_ONE of them;
    - any left (the lower peaks of blobs with more, a peak outside the foreground, or within h of its
      rim) by h_maxima on its region, all of a region's at once.
    """
    maxima = np.zeros(image.shape, np.uint8)
    if h > np.ptp(image):  # h_maxima's own shortcut, on the whole image
        return maxima
    seed = h_maxima_seed(image, h)
    higher_around = cv2.dilate(seed, EIGHT_NEIGHBOURS)
    del seed
    np.subtract(image, higher_around, out=higher_around)
    ys, xs = np.nonzero(higher_around >= h)
    del higher_around
    value = image[ys, xs]
    ys, xs, value = ys[value > 0], xs[value > 0], value[value > 0]
    owner = blobs.labels[ys, xs]
    top = np.zeros(len(blobs.boxes) + 1, image.dtype)  # each blob's highest candidate
    np.maximum.at(top, owner, value)
    below_top = value - h_maxima_seed(top, h)[owner] < h
    clear = value - blob_rims(image, blobs)[owner] >= h
    decided = (owner > 0) & ~below_top
    maxima[ys[decided & clear], xs[decided & clear]] = 1
    undecided = (owner == 0) | (decided & ~clear)
    lower = (owner > 0) & below_top
    few = lower & (np.bincount(owner[lower], minlength=len(top))[owner] <= LOWER_PEAKS_ONE_BY_ONE)
    for i in np.flatnonzero(few):
        higher = higher_seed_in_blob(image, h, blobs, ys[i], xs[i])
        maxima[ys[i], xs[i]] = not higher and clear[i]
        undecided[i] = not higher and not clear[i]
    undecided |= lower & ~few
    if undecided.any():
        h_maxima_by_region(image, h, ys[undecided], xs[undecided], maxima)
    return maxima


def h_maxima_seed(image: np.ndarray, h: float) -> np.ndarray:
    """The seed of `skimage.morphology.h_maxima` for a float image, to the bit: `image - h` minus a
    few units in the last place, so the seed is h below the image even after rounding."""
    seed = image - h
    seed -= 2 * np.finfo(image.dtype).resolution * np.abs(image)  # in place: the same arithmetic, one map fewer
    return seed


def blob_rims(image: np.ndarray, blobs: Blobs) -> np.ndarray:
    """Per blob id (0: none), the highest value of non-negative `image` next to the blob
    (8-connected) outside it, 0 at least."""
    foreground = blobs.labels > 0
    outside = cv2.dilate(np.where(foreground, 0, image), EIGHT_NEIGHBOURS)  # the highest background neighbour
    rims = np.zeros(len(blobs.boxes) + 1, image.dtype)
    edge = np.flatnonzero(foreground & (outside > 0))  # elsewhere 0, which changes no rim
    np.maximum.at(rims, blobs.labels.ravel()[edge], outside.ravel()[edge])
    # 4-connected blobs meet other blobs only at corners: 2x2 squares with two diagonal pixels in
    f = foreground
    corners = (  # (where the square's diagonal pixels are in and the others out, x of the first, of the second)
        (f[:-1, :-1] & f[1:, 1:] & ~f[:-1, 1:] & ~f[1:, :-1], 0, 1),
        (f[:-1, 1:] & f[1:, :-1] & ~f[:-1, :-1] & ~f[1:, 1:], 1, 0),
    )
    for meeting, first_x, second_x in corners:
        if not meeting.any():
            continue
        ys, xs = np.nonzero(meeting)
        first, second = (ys, xs + first_x), (ys + 1, xs + second_x)
        apart = blobs.labels[first] != blobs.labels[second]  # else the same blob, joined elsewhere
        first, second = (first[0][apart], first[1][apart]), (second[0][apart], second[1][apart])
        np.maximum.at(rims, blobs.labels[first], image[second])
        np.maximum.at(rims, blobs.labels[second], image[first])
    return rims


def higher_seed_in_blob(image: np.ndarray, h: float, blobs: Blobs, y: int, x: int) -> bool:
    """Whether the component of {image > t} around (y, x) within its blob holds a seed above t
    (t: the highest value with `image[y, x] - t >= h`), which rules the pixel out as an h-maximum."""
    box, inside = blobs.inside(blobs.labels[y, x])
    crop = image[box]
    value = image[y, x]
    components, _ = ndimage.label(inside & (value - crop < h), structure=EIGHT_NEIGHBOURS)
    around = components == components[y - box[0].start, x - box[1].start]
    return bool((value - h_maxima_seed(crop[around], h) < h).any())


def h_maxima_by_region(image: np.ndarray, h: float, ys: np.ndarray, xs: np.ndarray, maxima: np.ndarray) -> None:
    """Write into `maxima` whether each pixel (ys, xs) of non-negative `image` is an h-maximum,
    computed in the bounding box of its region: its 8-connected component of {image > low}, low
    being 2h below the lowest of the pixels (rounding cannot bring it above any pixel's t), 0 at least.

    A pixel's verdict depends only on its component of {image > t} (t: the highest value with
    `image[p] - t >= h`), which lies in its region; any path from outside passes a pixel of at most
    low <= t, so it cannot raise the reconstruction above t. The rest of the image can thus be zeros,
    set apart from the region by zeros in each box, with a copy of the map's maximum: through its
    zeros, the image raises the reconstruction to at most min(highest seed, 0), as the copy does.
    """
    peak = image.max()
    low = max(image[ys, xs].min() - 2 * h, 0)
    regions, _ = ndimage.label(image > low, structure=EIGHT_NEIGHBOURS)
    boxes = ndimage.find_objects(regions)
    owner = regions[ys, xs]
    for region in np.unique(owner):
        box = boxes[region - 1]
        inside = regions[box] == region
        crop = np.pad(np.where(inside, image[box], 0), 2)
        crop[0, 0] = peak
        points = owner == region
        maxima[ys[points], xs[points]] = h_maxima(crop, h)[ys[points] - box[0].start + 2, xs[points] - box[1].start + 2]


def watershed_by_blob(distance: np.ndarray, markers: np.ndarray, count: int, blobs: Blobs) -> np.ndarray:
    """(H, W) int32 labels: `watershed(-distance, with_orphan_blobs(markers, foreground, count), mask=foreground)`,
    flooding only the blobs that hold several markers, each in its bounding box.

    The watershed never crosses the background, so a blob with one marker id is all that id, and a
    blob with none its own orphan id. A blob floods the same alone: its heap pops its own items in
    the same order (value, then push order), except marker pixels of equal value, whose order the
    heap leaves to the other items. Within one marker that order only permutes pixels that give
    their neighbours the same id; if markers of two ids in a blob share a value, the whole image is
    flooded instead (and `distance` negated in place).
    """
    points = np.flatnonzero(markers)
    owner = blobs.labels.flat[points]
    points, owner, ids = points[owner > 0], owner[owner > 0], markers.flat[points][owner > 0]
    first = np.full(len(blobs.boxes) + 1, count + 1, np.int32)
    last = np.zeros_like(first)
    np.minimum.at(first, owner, ids)
    np.maximum.at(last, owner, ids)
    marked = last > 0
    blob_ids = np.arange(len(first), dtype=np.int32) + count  # a blob without a marker is one nucleus
    blob_ids[0] = 0
    blob_ids[marked] = first[marked]
    several = marked & (first < last)
    shared = several[owner]
    if ids_tie(owner[shared], distance.flat[points[shared]], ids[shared]):
        foreground = blobs.labels > 0
        markers = with_orphan_blobs(markers, foreground, count)
        return watershed(np.negative(distance, out=distance), markers, mask=foreground).astype(np.int32)
    labels = np.take(blob_ids, blobs.labels)
    for blob in np.flatnonzero(several):
        box, inside = blobs.inside(blob)
        labels[box][inside] = watershed(-distance[box], markers[box], mask=inside)[inside]
    return labels


def ids_tie(blobs: np.ndarray, values: np.ndarray, ids: np.ndarray) -> bool:
    """Whether two marker pixels of one blob with different ids have the same value."""
    order = np.lexsort((ids, values, blobs))
    blobs, values, ids = blobs[order], values[order], ids[order]
    return bool(((blobs[1:] == blobs[:-1]) & (values[1:] == values[:-1]) & (ids[1:] != ids[:-1])).any())
