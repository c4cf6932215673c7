import pytest
import torch
import torch.nn.functional as F

from patchunet.model.losses import bce_dice_loss, soft_dice_loss

CONFIDENT = 30.0
EQUAL = {"bce_weight": 1.0, "dice_weight": 1.0}


def mask() -> torch.Tensor:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1.0
    return target


def test_perfect_prediction_costs_nothing() -> None:
    target = mask()
    logits = (target * 2 - 1) * CONFIDENT
    assert bce_dice_loss(logits, target, **EQUAL).item() == pytest.approx(0.0, abs=1e-6)


def test_empty_mask_predicted_empty_is_perfect_not_nan() -> None:
    target = torch.zeros(2, 1, 8, 8)
    assert soft_dice_loss(torch.full_like(target, -CONFIDENT), target).item() == pytest.approx(0.0, abs=1e-6)
    uncertain = bce_dice_loss(torch.zeros_like(target), target, **EQUAL)
    assert torch.isfinite(uncertain) and uncertain.item() > 0


def test_all_wrong_prediction_scores_no_overlap_and_full_bce() -> None:
    target = mask()
    logits = (1 - target * 2) * CONFIDENT
    # no overlap at all: only the smoothing term stays, 1 / (96 predicted + 32 true pixels + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - 1 / 129)
    assert bce_dice_loss(logits, target, **EQUAL).item() == pytest.approx(CONFIDENT + 1 - 1 / 129, rel=1e-4)
    random = bce_dice_loss(torch.randn_like(target), target, **EQUAL)
    assert bce_dice_loss(logits, target, **EQUAL) > random


def test_weights_scale_each_term() -> None:
    target = mask()
    logits = torch.randn_like(target)
    expected = 2 * F.binary_cross_entropy_with_logits(logits, target) + 3 * soft_dice_loss(logits, target)
    assert bce_dice_loss(logits, target, bce_weight=2.0, dice_weight=3.0).item() == pytest.approx(expected.item())


def test_dice_is_pooled_over_the_batch() -> None:
    target = mask()
    target[1] = 0.0  # a patch with no nucleus
    logits = (target * 2 - 1) * CONFIDENT
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
