"""Probabilities to instances: touching nuclei are split, specks dropped, holes filled."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from patchunet.postprocess.instances import instances_from_probabilities

DEFAULTS = {"threshold": 0.5, "min_nucleus_area": 16, "max_hole_area": 64, "distance_sigma": 1.0, "watershed_h": 0.5}


def discs(shape: tuple[int, int], *discs: tuple[int, int, int]) -> np.ndarray:
    """A probability map of 0.9 inside the (row, col, radius) discs, 0.1 outside."""
    probabilities = np.full(shape, 0.1, np.float32)
    for row, col, radius in discs:
        probabilities[disk((row, col), radius, shape=shape)] = 0.9
    return probabilities


def test_two_touching_discs_become_two_instances() -> None:
    probabilities = discs((60, 80), (30, 25, 12), (30, 46, 12))  # overlapping by 3 pixels
    assert (probabilities > 0.5).sum() < 2 * np.pi * 12**2  # they really touch
    labels = instances_from_probabilities(probabilities, **DEFAULTS)
    assert labels.max() == 2
    assert labels[30, 25] != labels[30, 46] and labels[30, 25] > 0 and labels[30, 46] > 0
    areas = np.bincount(labels.ravel())[1:]
    assert abs(int(areas[0]) - int(areas[1])) < 0.1 * areas.mean()


def test_specks_are_dropped_and_holes_filled() -> None:
    probabilities = discs((60, 60), (30, 30, 10), (5, 5, 1))
    probabilities[28:32, 28:32] = 0.1  # a hole of 16 pixels inside the nucleus
    labels = instances_from_probabilities(probabilities, **DEFAULTS)
    assert labels.max() == 1
    assert labels[30, 30] == 1 and labels[5, 5] == 0


def test_ids_are_contiguous_and_small_maps_use_uint16() -> None:
    labels = instances_from_probabilities(discs((80, 80), (15, 15, 6), (60, 60, 8), (15, 60, 5)), **DEFAULTS)
    assert labels.dtype == np.uint16
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]


@pytest.mark.parametrize("min_area", [1, 5, 16])
def test_clean_foreground_drops_and_fills_as_skimage_does(min_area: int) -> None:
    """Objects and holes of every size around the limits, some cut by the border."""
    from scipy import ndimage
    from skimage.morphology import remove_small_holes, remove_small_objects

    from patchunet.postprocess.instances import clean_foreground

    probabilities = ndimage.gaussian_filter(np.random.default_rng(0).random((120, 150), np.float32), 1.2)
    for max_hole_area in (0, 4, 16):
        expected = remove_small_objects(probabilities > 0.5, max_size=min_area - 1)
        expected = remove_small_holes(expected, max_size=max_hole_area)
        np.testing.assert_array_equal(clean_foreground(probabilities, 0.5, min_area, max_hole_area), expected)


def test_finished_labels_drop_pieces_under_min_area_and_keep_the_order_of_ids() -> None:
    from patchunet.postprocess.instances import finished_labels

    labels = np.zeros((4, 20), np.int32)
    labels[0, :3], labels[1, :4], labels[2, :5], labels[3, 10:14] = 7, 2, 9, 40  # areas 3, 4, 5, 4
    expected = np.where(labels == 7, 0, np.searchsorted([0, 2, 9, 40], labels))
    np.testing.assert_array_equal(finished_labels(labels, 4), expected)


def test_nothing_above_threshold_gives_an_empty_map() -> None:
    labels = instances_from_probabilities(np.full((30, 30), 0.2, np.float32), **DEFAULTS)
    assert labels.shape == (30, 30) and labels.max() == 0


def crowded_nuclei(side: int = 600, seed: int = 0) -> np.ndarray:
    """Many discs of random sizes, some touching, as a blurred probability map."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = np.zeros((side, side), bool)
    for row, col, radius in zip(*rng.integers(0, side, (2, side // 2)), rng.integers(3, 12, side // 2), strict=True):
        mask[disk((row, col), radius, shape=mask.shape)] = True
    return ndimage.gaussian_filter(mask.astype(np.float32), 1.5)


def noisy_map(side: int = 200, seed: int = 0, level: float = 0.6) -> np.ndarray:
    """Smoothed noise around `level`, as a weakly trained model gives: big ragged blobs whose
    distance maps hold many peaks each."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random((side, side), np.float32), 3.0)
    return np.clip((noise - noise.mean()) / (4 * noise.std()) + level, 0, 1)


def test_distance_and_blobwise_h_maxima_equal_the_whole_image_calls() -> None:
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from patchunet.postprocess.instances import Blobs, distance_by_blob, h_maxima_by_blob

    foreground = crowded_nuclei() > 0.5
    distance = distance_by_blob(foreground)
    np.testing.assert_array_equal(distance, ndimage.distance_transform_edt(foreground))
    smoothed = ndimage.gaussian_filter(distance, 1.0)
    for h in (0.5, 2.0):
        np.testing.assert_array_equal(h_maxima_by_blob(smoothed, h, Blobs.of(foreground)), h_maxima(smoothed, h))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_blobwise_h_maxima_equal_h_maxima_for_any_h_and_smoothing(seed: int) -> None:
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from patchunet.postprocess.instances import Blobs, h_maxima_by_blob

    foreground = crowded_nuclei(side=160, seed=seed) > 0.5
    distance = ndimage.distance_transform_edt(foreground)
    for sigma, h in [(0.0, 0.5), (0.0, 1.0), (0.7, 0.3), (1.0, 0.5), (2.0, 1.0), (1.0, 3.0)]:
        smoothed = ndimage.gaussian_filter(distance, sigma) if sigma else distance
        np.testing.assert_array_equal(h_maxima_by_blob(smoothed, h, Blobs.of(foreground)), h_maxima(smoothed, h))


@pytest.mark.parametrize("seed", [1, 2])
def test_blobwise_h_maxima_equal_h_maxima_on_noisy_maps_with_many_peaks_per_blob(seed: int) -> None:
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from patchunet.postprocess.instances import LOWER_PEAKS_ONE_BY_ONE, Blobs, h_maxima_by_blob

    foreground = noisy_map(seed=seed) > 0.5
    blobs = Blobs.of(foreground)
    distance = ndimage.distance_transform_edt(foreground)
    for sigma, h in [(0.0, 0.5), (1.0, 0.5), (1.0, 0.2), (2.0, 1.0)]:
        smoothed = ndimage.gaussian_filter(distance, sigma) if sigma else distance
        expected = h_maxima(smoothed, h)
        peaks, _ = ndimage.label(expected, structure=np.ones((3, 3)))
        peaks_per_blob = np.bincount(blobs.labels[peaks > 0][np.unique(peaks[peaks > 0], return_index=True)[1]])
        assert peaks_per_blob.max() > LOWER_PEAKS_ONE_BY_ONE + 1  # a blob whose peaks are decided together
        np.testing.assert_array_equal(h_maxima_by_blob(smoothed, h, blobs), expected, err_msg=f"sigma {sigma}, h {h}")


def straightforward_instances(
    probabilities: np.ndarray,
    threshold: float,
    min_nucleus_area: int,
    max_hole_area: int,
    distance_sigma: float,
    watershed_h: float,
) -> np.ndarray:
    """The post-processing of the `none` head as the module docstring describes it, with whole-image calls."""
    from scipy import ndimage
    from skimage.morphology import h_maxima, remove_small_holes, remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    foreground = remove_small_objects(probabilities > threshold, max_size=min_nucleus_area - 1)
    foreground = remove_small_holes(foreground, max_size=max_hole_area)
    distance = ndimage.distance_transform_edt(foreground)
    if distance_sigma > 0:
        distance = ndimage.gaussian_filter(distance, distance_sigma)
    markers, count = ndimage.label(h_maxima(distance, watershed_h), structure=np.ones((3, 3)))
    blobs, _ = ndimage.label(foreground)
    marked = np.zeros(blobs.max() + 1, bool)
    marked[blobs[markers > 0]] = True
    unmarked = foreground & ~marked[blobs]
    markers[unmarked] = blobs[unmarked] + count  # a blob without an h-maximum is one nucleus
    labels = watershed(-distance, markers, mask=foreground)
    areas = np.bincount(labels.ravel())
    labels[(areas < min_nucleus_area)[labels] & (labels > 0)] = 0
    return relabel_sequential(labels)[0]


def thin_bar_beside_a_disc() -> np.ndarray:
    """A bar 3 pixels wide, a pixel from a disc: its peak is within h of the smoothed map beside it."""
    probabilities = discs((50, 70), (25, 20, 12))
    probabilities[10:40, 34:37] = 0.9
    probabilities[30:33, 40:66] = 0.9  # and a bar on its own
    return probabilities


def bar_meeting_a_square_at_a_corner() -> np.ndarray:
    """A square and a bar 2 pixels wide that touch only diagonally (two blobs), and a disc: the bar's
    plateau connects to the square's peak through the corner, so it is no h-maximum."""
    probabilities = discs((60, 80), (50, 60, 6))
    probabilities[10:24, 10:24] = 0.9
    probabilities[24:26, 24:34] = 0.9
    return probabilities


LAYOUTS = {
    "two equal touching discs": discs((60, 80), (30, 25, 12), (30, 46, 12)),
    "two unequal touching discs": discs((60, 80), (30, 25, 12), (31, 44, 9)),
    "three overlapping discs in a row": discs((60, 90), (30, 18, 10), (32, 36, 9), (29, 55, 12), (30, 72, 7)),
    "discs cut by the border": discs((60, 80), (0, 20, 10), (4, 36, 9), (30, 79, 12), (59, 50, 8)),
    "a thin bar beside a disc": thin_bar_beside_a_disc(),
    "a bar meeting a square at a corner": bar_meeting_a_square_at_a_corner(),
    "single discs": discs((80, 80), (15, 15, 6), (60, 60, 8), (15, 60, 5)),
    "crowded nuclei": crowded_nuclei(side=160, seed=4),
    "noisy map, one big blob": noisy_map(seed=5, level=0.65),
    "noisy map, many blobs": noisy_map(seed=6, level=0.5),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_instances_equal_the_straightforward_whole_image_pipeline(layout: str) -> None:
    """Same pixels and same numbering, whatever the smoothing and h."""
    probabilities = LAYOUTS[layout]
    for distance_sigma in (0.0, 1.0, 2.0):
        for watershed_h in (0.5, 1.0, 2.0):
            params = {**DEFAULTS, "distance_sigma": distance_sigma, "watershed_h": watershed_h, "min_nucleus_area": 4}
            np.testing.assert_array_equal(
                instances_from_probabilities(probabilities, **params),
                straightforward_instances(probabilities, **params),
                err_msg=f"{layout}, distance_sigma {distance_sigma}, watershed_h {watershed_h}",
            )


def test_post_processing_peaks_below_fourteen_float32_maps() -> None:
    """The whole-image h-maxima alone used to hold about 25 map sizes at once."""
    import tracemalloc

    probabilities = crowded_nuclei()
    tracemalloc.start()
    try:
        instances_from_probabilities(probabilities, **DEFAULTS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 14 * probabilities.size * 4


def eval_config(**changes):
    import dataclasses

    from conftest import REPO_ROOT

    from patchunet.core.config import EvalConfig, load_params, parse_section

    cfg = parse_section(EvalConfig, load_params(REPO_ROOT / "params.yaml"), "eval")
    return dataclasses.replace(cfg, min_nucleus_area=16, **changes)


def touching_cluster() -> np.ndarray:
    """Five discs, three of them touching in a row and two touching a thin one."""
    from skimage.draw import disk as draw_disk

    labels = np.zeros((90, 120), np.int32)
    for nucleus, (row, col, radius) in enumerate(
        [(30, 20, 11), (30, 40, 10), (30, 60, 11), (70, 30, 9), (72, 46, 8)], start=1
    ):
        labels[draw_disk((row, col), radius, shape=labels.shape)] = nucleus
    return labels


@pytest.mark.parametrize(("head", "least_aji"), [("boundary", 0.99), ("distance", 0.97), ("hover", 0.99)])
def test_each_head_splits_touching_nuclei_from_its_own_true_maps(head: str, least_aji: float) -> None:
    from patchunet.data.targets import make_targets
    from patchunet.evaluation.metrics import score_segmentation
    from patchunet.postprocess.instances import instances_from_maps

    truth = touching_cluster()
    labels = instances_from_maps(make_targets(truth, head), head, eval_config())
    assert labels.max() == 5
    assert score_segmentation(truth, labels).as_dict()["aji"] >= least_aji


def test_the_none_head_is_the_distance_transform_watershed() -> None:
    from patchunet.postprocess.instances import instances_from_maps

    probabilities = discs((60, 80), (30, 25, 12), (30, 46, 12))
    cfg = eval_config()
    expected = instances_from_probabilities(
        probabilities,
        threshold=cfg.threshold,
        min_nucleus_area=cfg.min_nucleus_area,
        max_hole_area=cfg.max_hole_area,
        distance_sigma=cfg.distance_sigma,
        watershed_h=cfg.watershed_h,
    )
    np.testing.assert_array_equal(instances_from_maps(probabilities[None], "none", cfg), expected)


def test_a_blob_without_a_marker_is_still_one_nucleus() -> None:
    from patchunet.postprocess.instances import instances_from_maps

    foreground = discs((40, 40), (20, 20, 8))
    all_boundary = np.stack([foreground, np.full_like(foreground, 0.9)])  # no pixel passes as a marker
    labels = instances_from_maps(all_boundary, "boundary", eval_config())
    assert labels.max() == 1 and (labels > 0).sum() == (foreground > 0.5).sum()


def test_the_search_ranks_settings_by_val_aji_and_keeps_the_rest_of_eval() -> None:
    from patchunet.data.targets import make_targets
    from patchunet.evaluation.postprocess_search import GRIDS, search_postprocessing

    truth = touching_cluster()
    maps = make_targets(truth, "distance")
    maps[1] *= 0.7  # a model whose distance never reaches the upper marker thresholds
    results = search_postprocessing([(maps, truth)], "distance", eval_config())
    assert len(results) == np.prod([len(v) for v in GRIDS["distance"].values()])
    ajis = [r.per_image_mean["aji"] for r in results]
    assert ajis == sorted(ajis, reverse=True) and ajis[0] > ajis[-1]
    assert results[0].cfg.marker_threshold < 0.7 and results[0].cfg.overlap == eval_config().overlap


def test_finished_labels_keep_ids_past_65535_when_the_last_id_is_dropped() -> None:
    from patchunet.postprocess.instances import finished_labels

    labels = np.arange(70_002, dtype=np.int32).reshape(1, -1)  # 70,001 one-pixel pieces, then a dropped one
    labels[0, -1] = 70_001
    labels = np.concatenate([labels, labels])  # each kept id has 2 pixels, the last id too...
    labels[1, -1] = 0  # ...but the last: 1 pixel, under min_area
    finished = finished_labels(labels, 2)
    assert finished.dtype == np.uint32 and finished.max() == 70_000
