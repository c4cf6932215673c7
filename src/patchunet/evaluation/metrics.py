"""Segmentation metrics: pixel Dice/IoU, and instance metrics AJI, AJI+, PQ and detection F1.

Every instance metric comes from one contingency matrix of (true id, predicted id) pixel counts,
so no Python loop runs over nucleus pairs. Scores are kept as additive counts: one image's counts
give its scores, and the sum of all images' counts gives the dataset-level (pooled) scores.

Conventions, when there is nothing to match: two empty maps score 1.0 everywhere; one empty
map against a non-empty one scores 0.0.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

MATCH_IOU = 0.5
"""A predicted and a true nucleus match when their IoU is above this (Kirillov et al.)."""


@dataclasses.dataclass
class PixelCounts:
    """True positive, false positive and false negative pixels, summed over any number of images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @classmethod
    def between(cls, predicted: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> PixelCounts:
        """The counts of one pair of boolean arrays (or tensors) of the same shape."""
        counts = cls()
        counts.add(predicted, target)
        return counts

    def add(self, predicted: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Accumulate from boolean arrays (or tensors) of the same shape."""
        self.tp += int((predicted & target).sum())
        self.fp += int((predicted & ~target).sum())
        self.fn += int((~predicted & target).sum())

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when both prediction and truth are empty."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both prediction and truth are empty."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)


@dataclasses.dataclass
class InstanceCounts:
    """Additive sufficient statistics of the instance metrics of one or more images."""

    aji_intersection: int = 0
    aji_union: int = 0
    aji_plus_intersection: int = 0
    aji_plus_union: int = 0
    matched: int = 0  # pairs with IoU > 0.5: the true positives of PQ and detection
    unmatched_predicted: int = 0  # false positives
    unmatched_true: int = 0  # false negatives
    matched_iou_sum: float = 0.0

    def __add__(self, other: InstanceCounts) -> InstanceCounts:
        return InstanceCounts(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    @property
    def aji(self) -> float:
        return _ratio(self.aji_intersection, self.aji_union)

    @property
    def aji_plus(self) -> float:
        return _ratio(self.aji_plus_intersection, self.aji_plus_union)

    @property
    def dq(self) -> float:
        """Detection quality: TP / (TP + FP/2 + FN/2), which is also the detection F1."""
        return _ratio(self.matched, self.matched + 0.5 * (self.unmatched_predicted + self.unmatched_true))

    @property
    def sq(self) -> float:
        """Segmentation quality: mean IoU of the matched pairs (0 without matches, 1 if both are empty)."""
        if self.matched == 0:
            return 1.0 if self.unmatched_predicted == self.unmatched_true == 0 else 0.0
        return self.matched_iou_sum / self.matched

    @property
    def pq(self) -> float:
        return self.dq * self.sq

    @property
    def precision(self) -> float:
        return self._detection_ratio(self.matched + self.unmatched_predicted)

    @property
    def recall(self) -> float:
        return self._detection_ratio(self.matched + self.unmatched_true)

    def _detection_ratio(self, denominator: int) -> float:
        """matched / denominator, with the module's convention when there is nothing to count."""
        if self.matched + self.unmatched_predicted + self.unmatched_true == 0:
            return 1.0
        return self.matched / denominator if denominator else 0.0

    @property
    def f1(self) -> float:
        return self.dq


@dataclasses.dataclass
class SegmentationScores:
    """Pixel and instance counts of one image or a whole dataset, and every score they give."""

    pixels: PixelCounts = dataclasses.field(default_factory=PixelCounts)
    instances: InstanceCounts = dataclasses.field(default_factory=InstanceCounts)

    def __add__(self, other: SegmentationScores) -> SegmentationScores:
        pixels = PixelCounts(*(a + b for a, b in zip(_values(self.pixels), _values(other.pixels), strict=True)))
        return SegmentationScores(pixels, self.instances + other.instances)

    def as_dict(self) -> dict[str, float]:
        """The reported scores, named as in metrics/test.json and MLflow's test/... metrics."""
        i = self.instances
        return {
            "dice": self.pixels.dice,
            "iou": self.pixels.iou,
            "aji": i.aji,
            "aji_plus": i.aji_plus,
            "pq": i.pq,
            "dq": i.dq,
            "sq": i.sq,
            "precision": i.precision,
            "recall": i.recall,
            "f1": i.f1,
        }


def summarise_scores(per_image: list[SegmentationScores]) -> dict[str, dict[str, float] | int]:
    """Both aggregates of a test set, each named for what it is.

    `per_image_mean`: each score computed per image, then averaged (how MoNuSeg papers report
    AJI). `dataset`: counts pooled over all images first, so dense images weigh more.
    """
    if not per_image:
        raise ValueError("no images to summarise")
    pooled = sum(per_image[1:], start=per_image[0])
    rows = [scores.as_dict() for scores in per_image]
    mean = {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}
    return {"images": len(per_image), "per_image_mean": mean, "dataset": pooled.as_dict()}


def score_segmentation(true_labels: np.ndarray, predicted_labels: np.ndarray) -> SegmentationScores:
    """Pixel and instance counts of a predicted instance map against the true one (0 = background)."""
    pixels = PixelCounts.between(predicted_labels > 0, true_labels > 0)
    return SegmentationScores(pixels, instance_counts(true_labels, predicted_labels))


def contingency_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray) -> np.ndarray:
    """(T+1, P+1) pixel counts of every (true, predicted) pair; row and column 0 are background.

    Ids need not be contiguous: each side is relabelled 1..T and 1..P in increasing order.
    """
    import numpy as np

    if true_labels.shape != predicted_labels.shape:
        raise ValueError(f"label maps differ in shape: {true_labels.shape} and {predicted_labels.shape}")
    true_index, true_count = _dense_ids(true_labels)
    predicted_index, predicted_count = _dense_ids(predicted_labels)
    pairs = true_index * (predicted_count + 1) + predicted_index
    counts = np.bincount(pairs, minlength=(true_count + 1) * (predicted_count + 1))
    return counts.reshape(true_count + 1, predicted_count + 1)


def instance_counts(true_labels: np.ndarray, predicted_labels: np.ndarray) -> InstanceCounts:
    """AJI (Kumar et al. 2017), AJI+ (one-to-one), PQ and detection statistics, from one matrix."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    table = contingency_matrix(true_labels, predicted_labels)
    intersection = table[1:, 1:]
    true_area = table[1:, :].sum(axis=1)
    predicted_area = table[:, 1:].sum(axis=0)
    n_true, n_predicted = intersection.shape
    if n_true == 0 or n_predicted == 0:
        return InstanceCounts(
            aji_union=int(true_area.sum() + predicted_area.sum()),
            aji_plus_union=int(true_area.sum() + predicted_area.sum()),
            unmatched_predicted=n_predicted,
            unmatched_true=n_true,
        )
    union = true_area[:, None] + predicted_area[None, :] - intersection
    iou = intersection / union

    # AJI: each true nucleus takes its best-IoU prediction, which others may share; predictions
    # nobody took, and true nuclei that touch no prediction, count in the union only.
    best = iou.argmax(axis=1)
    rows = np.arange(n_true)
    paired = iou[rows, best] > 0
    used = np.zeros(n_predicted, bool)
    used[best[paired]] = True
    aji_intersection = intersection[rows[paired], best[paired]].sum()
    aji_union = union[rows[paired], best[paired]].sum() + true_area[~paired].sum() + predicted_area[~used].sum()

    # AJI+: the one-to-one assignment of maximal total IoU (Hungarian), so no prediction is reused.
    true_index, predicted_index = linear_sum_assignment(-iou)
    overlapping = iou[true_index, predicted_index] > 0
    true_index, predicted_index = true_index[overlapping], predicted_index[overlapping]
    plus_true = np.zeros(n_true, bool)
    plus_true[true_index] = True
    plus_predicted = np.zeros(n_predicted, bool)
    plus_predicted[predicted_index] = True
    aji_plus_intersection = intersection[true_index, predicted_index].sum()
    aji_plus_union = (
        union[true_index, predicted_index].sum() + true_area[~plus_true].sum() + predicted_area[~plus_predicted].sum()
    )

    # PQ and detection: IoU > 0.5 matches are unique on both sides, so no assignment is needed.
    matched_iou = iou[iou > MATCH_IOU]
    return InstanceCounts(
        aji_intersection=int(aji_intersection),
        aji_union=int(aji_union),
        aji_plus_intersection=int(aji_plus_intersection),
        aji_plus_union=int(aji_plus_union),
        matched=int(matched_iou.size),
        unmatched_predicted=n_predicted - int(matched_iou.size),
        unmatched_true=n_true - int(matched_iou.size),
        matched_iou_sum=float(matched_iou.sum()),
    )


def match_instances(true_labels: np.ndarray, predicted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the true and of the predicted nuclei that have a partner at IoU > 0.5 (for drawing)."""
    import numpy as np

    table = contingency_matrix(true_labels, predicted_labels)
    intersection = table[1:, 1:]
    union = table[1:, :].sum(axis=1)[:, None] + table[:, 1:].sum(axis=0)[None, :] - intersection
    true_rows, predicted_columns = np.nonzero(intersection > MATCH_IOU * union)
    true_ids = np.unique(true_labels[true_labels > 0])
    predicted_ids = np.unique(predicted_labels[predicted_labels > 0])
    return true_ids[true_rows], predicted_ids[predicted_columns]


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Each pixel's rank among the map's ids (0 stays background), and the number of ids."""
    import numpy as np

    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    if ids.size and ids[0] == 0:
        return inverse.astype(np.int64), ids.size - 1
    return inverse.astype(np.int64) + 1, ids.size


def _ratio(numerator: float, denominator: float) -> float:
    return 1.0 if denominator == 0 else float(numerator / denominator)


def _values(counts: object) -> list:
    return [getattr(counts, f.name) for f in dataclasses.fields(counts)]  # type: ignore[arg-type]
