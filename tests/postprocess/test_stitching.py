"""The rule that gives each nucleus to one tile, whole."""

from __future__ import annotations

import numpy as np
import pytest

from patchunet.postprocess.stitching import claimed_pixels, keep_core_nuclei

NO_CLAIMS = np.zeros((40, 40), np.int32)
ALL_INTERIOR = (True, True, True, True)


def disc(labels: np.ndarray, nucleus: int, cy: int, cx: int, radius: int) -> None:
    yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = nucleus


def test_a_tile_keeps_the_nuclei_whose_centroid_lies_in_its_core_whole() -> None:
    labels = np.zeros((40, 40), np.int32)
    disc(labels, 1, 12, 18, 4)  # centroid in the core, crossing its right edge at x = 20
    disc(labels, 2, 12, 24, 3)  # centroid right of the core: the next tile's
    kept, report = keep_core_nuclei(labels, (10, 10, 10, 20), ALL_INTERIOR, NO_CLAIMS)
    assert report.kept == 1 and kept.max() == 1
    assert ((kept == 1) == (labels == 1)).all()  # whole, past the core's edge


def test_a_nucleus_touching_the_read_box_edge_inside_the_slide_is_cut_and_dropped() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 0:6] = 1  # centroid (14.5, 2.5) in a core starting at x = 0, but touching x = 0
    assert keep_core_nuclei(labels, (0, 0, 20, 20), ALL_INTERIOR, NO_CLAIMS)[1].cut == 1
    on_slide_edge = (True, True, False, True)  # the box's left edge is the slide's: nothing beyond
    report = keep_core_nuclei(labels, (0, 0, 20, 20), on_slide_edge, NO_CLAIMS)[1]
    assert (report.cut, report.kept) == (0, 1)


@pytest.mark.parametrize(("shift", "dropped"), [(-1, True), (0, True), (1, False)])
def test_a_nucleus_an_earlier_neighbour_kept_is_not_kept_twice(shift: int, dropped: bool) -> None:
    """The earlier tile placed the centroid on its side of the border, this tile on its own: a
    large overlap is the same nucleus, a small one is a neighbour, trimmed. Discs of radius 4, 2,
    3 and 4 px apart overlap by 63 %, 54 % and 39 %."""
    claimed = np.zeros((40, 40), np.int32)
    disc(claimed, 7, 20, 18, 4)
    labels = np.zeros((40, 40), np.int32)
    disc(labels, 1, 20, 21 + shift, 4)
    kept, report = keep_core_nuclei(labels, (20, 0, 20, 40), ALL_INTERIOR, claimed)
    assert report.duplicates == int(dropped)
    assert not (kept & (claimed > 0)).any()  # no pixel in two nuclei
    if not dropped:
        assert report.trimmed_pixels > 0 and report.kept == 1


def one_nucleus_at_a_time(labels, core, interior_edges, claimed):
    """The rule written nucleus by nucleus, as it reads: the reference for `keep_core_nuclei`."""
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential

    x, y, width, height = core
    kept, duplicates, cut, trimmed = np.zeros_like(labels), 0, 0, 0
    ids = np.arange(1, int(labels.max()) + 1)
    with np.errstate(invalid="ignore"):  # ids without pixels: no centroid
        centroids = ndimage.center_of_mass(np.ones(labels.shape), labels, ids) if len(ids) else []
    claimed_areas = np.bincount(claimed.ravel())
    for nucleus, box, (cy, cx) in zip(ids, ndimage.find_objects(labels), centroids, strict=False):
        if box is None or not (y <= cy < y + height and x <= cx < x + width):
            continue
        rows, cols = box
        top, bottom, left, right = interior_edges
        if (
            (top and rows.start == 0)
            or (bottom and rows.stop == labels.shape[0])
            or (left and cols.start == 0)
            or (right and cols.stop == labels.shape[1])
        ):
            cut += 1
            continue
        mask = labels[box] == nucleus
        overlapped = claimed[box][mask]
        overlapped = overlapped[overlapped > 0]
        if overlapped.size:
            others, counts = np.unique(overlapped, return_counts=True)
            if (np.maximum(counts / mask.sum(), counts / claimed_areas[others]) >= 0.5).any():
                duplicates += 1
                continue
        trimmed += overlapped.size
        kept[box][mask & (claimed[box] == 0)] = nucleus
    kept = relabel_sequential(kept)[0]
    return kept, (int(kept.max()), duplicates, cut, trimmed)


@pytest.mark.parametrize("seed", range(6))
def test_the_whole_tile_at_once_keeps_what_the_rule_nucleus_by_nucleus_keeps(seed: int) -> None:
    """Random crowded discs (touching, overlapping earlier claims, on the box's edges, ids with
    gaps) against the per-nucleus reference: the same labels and the same counts."""
    rng = np.random.default_rng(seed)
    labels, claimed = np.zeros((80, 90), np.int32), np.zeros((80, 90), np.int32)
    for nucleus in rng.choice(np.arange(1, 200), 40, replace=False):
        disc(labels, int(nucleus), *rng.integers(-3, [83, 93]), int(rng.integers(1, 7)))
    for nucleus in range(1, 40):
        disc(claimed, nucleus, *rng.integers(0, [80, 90]), int(rng.integers(2, 7)))
    core, edges = (10, 12, 50, 40), tuple(bool(edge) for edge in rng.integers(0, 2, 4))
    kept, report = keep_core_nuclei(labels, core, edges, claimed)
    expected, counts = one_nucleus_at_a_time(labels, core, edges, claimed)
    assert np.array_equal(kept, expected)
    assert (report.kept, report.duplicates, report.cut, report.trimmed_pixels) == counts
    assert report.duplicates + report.trimmed_pixels > 0  # the claims do overlap


def test_claimed_pixels_are_the_earlier_nuclei_over_the_read_box_only() -> None:
    first = np.zeros((10, 10), np.uint16)
    first[:, :] = 1  # straddles the box's left edge: 5 of its 10 columns inside
    second = np.zeros((12, 10), np.uint16)
    second[0:2, 0:3], second[5:12, 4:10] = 1, 2
    elsewhere = np.ones((5, 5), np.uint16)
    claimed = claimed_pixels([(95, 10, first), (300, 10, elsewhere), (120, 30, second)], (100, 0, 50, 40))
    assert claimed.shape == (40, 50)
    assert (claimed[10:20, 0:5] == 1).all() and (claimed == 1).sum() == 50
    assert (claimed == 3).sum() == 6 and (claimed == 4).sum() == 5 * 6  # own ids, cut at the bottom
    assert set(np.unique(claimed)) == {0, 1, 3, 4}
