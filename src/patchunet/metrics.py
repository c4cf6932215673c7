"""Segmentation metrics."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclasses.dataclass
class PixelCounts:
    """True positive, false positive and false negative pixels, summed over any number of images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Accumulate from boolean arrays (or tensors) of the same shape."""
        self.tp += int((predicted & target).sum())
        self.fp += int((predicted & ~target).sum())
        self.fn += int((~predicted & target).sum())

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when both prediction and truth are empty."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both prediction and truth are empty."""
        denominator = self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else self.tp / denominator
