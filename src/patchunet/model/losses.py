"""BCE plus soft Dice, on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_SMOOTHING = 1.0
"""Added to both sides of the Dice ratio: an empty mask predicted empty scores a perfect 1, not 0/0."""


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over the whole batch at once (pixels of all images pooled).

    Pooling the batch keeps patches with few or no nuclei from dominating with noisy ratios.
    """
    probs = torch.sigmoid(logits)
    intersection = (probs * target).sum()
    total = probs.sum() + target.sum()
    return 1.0 - (2.0 * intersection + DICE_SMOOTHING) / (total + DICE_SMOOTHING)


def bce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    bce_weight: float,
    dice_weight: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted BCE-with-logits plus soft Dice; logits and target are (N, 1, H, W).

    Given per-pixel `weights` (N, 1, H, W), the BCE is their weighted mean (sum of weight * BCE over
    the sum of weights), so it keeps the plain BCE's scale; the Dice ignores them.
    """
    if weights is None:
        bce = F.binary_cross_entropy_with_logits(logits, target)
    else:
        pixel_bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        bce = (weights * pixel_bce).sum() / weights.sum()
    return bce_weight * bce + dice_weight * soft_dice_loss(logits, target)
