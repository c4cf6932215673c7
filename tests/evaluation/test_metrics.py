import numpy as np
import pytest

from patchunet.evaluation.metrics import (
    PixelCounts,
    contingency_matrix,
    instance_counts,
    match_instances,
    score_segmentation,
    summarise_scores,
)


def test_pixel_dice_and_iou_on_a_known_overlap() -> None:
    truth = np.zeros((10, 10), bool)
    truth[:, :4] = True  # 40 pixels
    predicted = np.zeros((10, 10), bool)
    predicted[:, 2:6] = True  # 40 pixels, 20 shared
    counts = PixelCounts()
    counts.add(predicted, truth)
    assert (counts.tp, counts.fp, counts.fn) == (20, 20, 20)
    assert counts.dice == pytest.approx(0.5)
    assert counts.iou == pytest.approx(1 / 3)


def test_counts_pool_over_images_and_empty_is_perfect() -> None:
    counts = PixelCounts()
    assert counts.dice == 1.0 and counts.iou == 1.0
    empty = np.zeros((4, 4), bool)
    counts.add(empty, empty)
    full = np.ones((4, 4), bool)
    counts.add(full, full)
    assert counts.dice == 1.0 and counts.tp == 16


# ---- instance metrics on hand-built label maps with known answers ----


def boxes(shape: tuple[int, int], *placed: tuple[int, int, int, int, int]) -> np.ndarray:
    """A label map with rectangles (id, row, col, height, width)."""
    labels = np.zeros(shape, np.int32)
    for label, row, col, height, width in placed:
        labels[row : row + height, col : col + width] = label
    return labels


def test_identical_maps_with_scattered_ids_score_one_everywhere() -> None:
    truth = boxes((60, 60), (3, 0, 0, 10, 10), (17, 20, 20, 15, 5), (40000, 40, 5, 8, 30))
    scores = score_segmentation(truth, truth).as_dict()
    assert scores == pytest.approx(dict.fromkeys(scores, 1.0))


def test_a_single_missed_nucleus() -> None:
    truth = boxes((40, 40), (1, 0, 0, 10, 10), (2, 20, 20, 10, 10))
    predicted = boxes((40, 40), (5, 0, 0, 10, 10))
    scores = score_segmentation(truth, predicted).as_dict()
    assert scores["aji"] == pytest.approx(0.5)  # 100 / (100 + 100 missed)
    assert scores["aji_plus"] == pytest.approx(0.5)
    assert scores["dq"] == pytest.approx(2 / 3)  # 1 / (1 + 0.5 * 1 missed)
    assert scores["sq"] == pytest.approx(1.0)
    assert scores["pq"] == pytest.approx(2 / 3)
    assert (scores["precision"], scores["recall"]) == pytest.approx((1.0, 0.5))
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["dice"] == pytest.approx(2 / 3)


def test_one_prediction_merging_two_nuclei_is_credited_twice_by_aji_but_once_by_aji_plus() -> None:
    truth = boxes((10, 20), (1, 0, 0, 10, 10), (2, 0, 10, 10, 10))
    merged = boxes((10, 20), (1, 0, 0, 10, 20))
    counts = instance_counts(truth, merged)
    # AJI: both nuclei pick the merged one (IoU 100/200 each): (100 + 100) / (200 + 200)
    assert counts.aji == pytest.approx(0.5)
    # AJI+: it may match only one: 100 / (200 + 100 for the unmatched nucleus)
    assert counts.aji_plus == pytest.approx(1 / 3)
    # IoU is exactly 0.5, not above it: no PQ match
    assert (counts.matched, counts.unmatched_predicted, counts.unmatched_true) == (0, 1, 2)
    assert counts.pq == 0.0


@pytest.mark.parametrize(
    ("shift", "iou", "matched"),
    [(9, 630 / 1170, True), (10, 0.5, False), (11, 570 / 1230, False)],
)
def test_a_shifted_nucleus_matches_for_pq_only_above_half_iou(shift: int, iou: float, matched: bool) -> None:
    truth = boxes((30, 60), (1, 0, 0, 30, 30))
    predicted = boxes((30, 60), (1, 0, shift, 30, 30))
    counts = instance_counts(truth, predicted)
    assert counts.matched == int(matched)
    assert counts.sq == pytest.approx(iou if matched else 0.0)
    assert counts.pq == pytest.approx(iou if matched else 0.0)
    assert counts.aji == pytest.approx(iou)  # AJI does not threshold
    assert [ids.size for ids in match_instances(truth, predicted)] == [int(matched)] * 2


def test_empty_inputs() -> None:
    empty = np.zeros((20, 20), np.uint16)
    nucleus = boxes((20, 20), (7, 5, 5, 6, 6))
    both_empty = score_segmentation(empty, empty).as_dict()
    assert both_empty == pytest.approx(dict.fromkeys(both_empty, 1.0))
    for truth, predicted in ((empty, nucleus), (nucleus, empty)):
        scores = score_segmentation(truth, predicted).as_dict()
        for name in ("dice", "iou", "aji", "aji_plus", "pq", "dq", "sq", "f1"):
            assert scores[name] == 0.0, name
    assert score_segmentation(nucleus, empty).as_dict()["precision"] == 0.0  # nothing predicted
    assert score_segmentation(empty, nucleus).as_dict()["recall"] == 0.0  # nothing to find


def test_contingency_matrix_counts_pixels_of_every_pair() -> None:
    truth = boxes((4, 4), (9, 0, 0, 2, 2))
    predicted = boxes((4, 4), (4, 0, 1, 2, 2))
    assert contingency_matrix(truth, predicted).tolist() == [[10, 2], [2, 2]]
    with pytest.raises(ValueError, match="differ in shape"):
        contingency_matrix(truth, predicted[:3])


def test_pooled_counts_equal_the_scores_of_the_images_side_by_side() -> None:
    rng = np.random.default_rng(0)
    maps = [(random_blobs(rng, 40), random_blobs(rng, 40)) for _ in range(3)]
    per_image = [score_segmentation(t, p) for t, p in maps]
    offset = [(t + 1000 * n * (t > 0), p + 1000 * n * (p > 0)) for n, (t, p) in enumerate(maps)]
    side_by_side = score_segmentation(np.hstack([t for t, _ in offset]), np.hstack([p for _, p in offset]))
    summary = summarise_scores(per_image)
    assert summary["dataset"] == pytest.approx(side_by_side.as_dict())
    assert summary["per_image_mean"]["aji"] == pytest.approx(np.mean([s.instances.aji for s in per_image]))
    assert summary["images"] == 3


def test_vectorised_aji_and_pq_agree_with_a_loop_over_pairs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        truth, predicted = random_blobs(rng, 64), random_blobs(rng, 64)
        counts = instance_counts(truth, predicted)
        aji, pq = reference_aji_and_pq(truth, predicted)
        assert counts.aji == pytest.approx(aji)
        assert counts.pq == pytest.approx(pq)


def test_aji_plus_agrees_with_the_best_one_to_one_matching_found_by_brute_force() -> None:
    rng = np.random.default_rng(2)
    for _ in range(8):
        truth, predicted = random_blobs(rng, 32, count=5), random_blobs(rng, 32, count=5)
        assert instance_counts(truth, predicted).aji_plus == pytest.approx(reference_aji_plus(truth, predicted))


def reference_aji_plus(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Try every one-to-one matching; keep the one of largest total IoU (ties: any)."""
    import itertools

    true_ids = [i for i in np.unique(truth) if i]
    predicted_ids = [j for j in np.unique(predicted) if j]

    def iou(i, j):
        return ((truth == i) & (predicted == j)).sum() / ((truth == i) | (predicted == j)).sum()

    best_total, best_pairs = -1.0, []
    slots = predicted_ids + [None] * len(true_ids)
    for assignment in set(itertools.permutations(slots, len(true_ids))):
        pairs = [(i, j) for i, j in zip(true_ids, assignment, strict=True) if j is not None and iou(i, j) > 0]
        total = sum(iou(i, j) for i, j in pairs)
        if total > best_total + 1e-12:
            best_total, best_pairs = total, pairs
    intersection = sum(((truth == i) & (predicted == j)).sum() for i, j in best_pairs)
    union = sum(((truth == i) | (predicted == j)).sum() for i, j in best_pairs)
    union += sum((truth == i).sum() for i in true_ids if i not in {p[0] for p in best_pairs})
    union += sum((predicted == j).sum() for j in predicted_ids if j not in {p[1] for p in best_pairs})
    return intersection / union


def random_blobs(rng: np.random.Generator, side: int, count: int = 12) -> np.ndarray:
    """Overlapping random rectangles; later ones overwrite earlier ones, like touching nuclei."""
    labels = np.zeros((side, side), np.int32)
    for label in rng.choice(np.arange(1, 500), size=count, replace=False):
        row, col = rng.integers(0, side - 6, 2)
        labels[row : row + rng.integers(3, 12), col : col + rng.integers(3, 12)] = label
    return labels


def reference_aji_and_pq(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Kumar et al.'s AJI and Kirillov et al.'s PQ, written as the papers state them, pair by pair."""
    true_ids = [i for i in np.unique(truth) if i]
    predicted_ids = [j for j in np.unique(predicted) if j]
    intersection = union = 0
    used = set()
    for i in true_ids:
        t = truth == i
        ious = [((t & (predicted == j)).sum() / (t | (predicted == j)).sum(), j) for j in predicted_ids]
        best_iou, best = max(ious, default=(0.0, None))
        if best_iou > 0:
            intersection += (t & (predicted == best)).sum()
            union += (t | (predicted == best)).sum()
            used.add(best)
        else:
            union += t.sum()
    union += sum((predicted == j).sum() for j in predicted_ids if j not in used)
    tp, iou_total = 0, 0.0
    for i in true_ids:
        for j in predicted_ids:
            iou = ((truth == i) & (predicted == j)).sum() / ((truth == i) | (predicted == j)).sum()
            if iou > 0.5:
                tp, iou_total = tp + 1, iou_total + iou
    fp, fn = len(predicted_ids) - tp, len(true_ids) - tp
    pq = 0.0 if tp == 0 else (iou_total / tp) * tp / (tp + 0.5 * fp + 0.5 * fn)
    return intersection / union, pq
