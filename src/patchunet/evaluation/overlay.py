"""Pictures of a segmentation: nucleus contours drawn over the H&E image, and the instance head's maps.

Contours rather than filled masks, so the nucleus underneath stays visible to a reviewer.
"""

from __future__ import annotations

import numpy as np

from patchunet.evaluation.metrics import match_instances
from patchunet.io.drawing import BLUE, GREEN, RED, YELLOW, draw_contours

SEPARATOR_WIDTH = 8


def prediction_overlay(image: np.ndarray, labels: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """The image with every predicted nucleus outlined."""
    return draw_contours(image, labels, YELLOW, opacity=opacity)


def truth_and_prediction_overlay(
    image: np.ndarray, true_labels: np.ndarray, predicted_labels: np.ndarray, opacity: float = 1.0
) -> np.ndarray:
    """One picture: true nuclei outlined green, predicted ones yellow, where they coincide the prediction on top."""
    return draw_contours(
        draw_contours(image, true_labels, GREEN, opacity=opacity), predicted_labels, YELLOW, opacity=opacity
    )


def match_overlay(
    image: np.ndarray, true_labels: np.ndarray, predicted_labels: np.ndarray, opacity: float = 1.0
) -> np.ndarray:
    """Ground truth on the left, prediction on the right, outlined by match at IoU > 0.5.

    Left: true nuclei green where a prediction matches them, blue where none does (false
    negatives). Right: predictions green where they match (true positives), red where they do
    not (false positives). A white bar separates the two halves.
    """
    matched_true, matched_predicted = match_instances(true_labels, predicted_labels)
    missed = np.setdiff1d(np.unique(true_labels[true_labels > 0]), matched_true)
    false_positive = np.setdiff1d(np.unique(predicted_labels[predicted_labels > 0]), matched_predicted)
    truth = draw_contours(image, true_labels, GREEN, matched_true, opacity)
    truth = draw_contours(truth, true_labels, BLUE, missed, opacity)
    prediction = draw_contours(image, predicted_labels, GREEN, matched_predicted, opacity)
    prediction = draw_contours(prediction, predicted_labels, RED, false_positive, opacity)
    separator = np.full((image.shape[0], SEPARATOR_WIDTH, 3), 255, np.uint8)
    return np.hstack([truth, separator, prediction])


def head_picture(maps: np.ndarray, head: str) -> np.ndarray | None:
    """(H, W, 3) uint8 grey picture of what the instance head predicted, white = high: the boundary
    probability, the normalised distance, or HoVer-Net's x and y offsets side by side (mid-grey = 0);
    None for a model without a head."""
    if head == "none":
        return None
    if head == "hover":
        offsets = [np.clip((maps[c] + 1) / 2, 0, 1) for c in (1, 2)]
        separator = np.ones((maps.shape[1], SEPARATOR_WIDTH), np.float32)
        grey = np.hstack([offsets[0], separator, offsets[1]])
    else:
        grey = np.clip(maps[1], 0, 1)
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
