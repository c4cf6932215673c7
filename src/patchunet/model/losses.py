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


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, bce_weight: float, dice_weight: float) -> torch.Tensor:
    """Weighted BCE-with-logits plus soft Dice; logits and target are (N, 1, H, W)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce_weight * bce + dice_weight * soft_dice_loss(logits, target)
