"""Instance-head activations and losses (their targets: tests/data/test_targets.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import touching_pair

from patchunet.data.targets import make_targets
from patchunet.model.heads import activate, head_loss

HEADS = ["none", "boundary", "distance", "hover"]
WEIGHTS = {"bce_weight": 1.0, "dice_weight": 1.0, "head_weight": 1.0}


@pytest.mark.parametrize("head", HEADS)
def test_loss_is_lower_for_the_true_maps_than_for_noise(head: str) -> None:
    targets = torch.from_numpy(make_targets(touching_pair(), head))[None]
    confident = targets.clone()
    confident[:, 0] = (targets[:, 0] * 2 - 1) * 12  # foreground logits
    if head in ("boundary",):
        confident[:, 1] = (targets[:, 1] * 2 - 1) * 12
    if head == "distance":
        confident[:, 1] = torch.logit(targets[:, 1].clamp(1e-4, 1 - 1e-4))
    good = head_loss(confident, targets, head, **WEIGHTS)
    noise = head_loss(torch.randn_like(targets), targets, head, **WEIGHTS)
    assert good < 0.1 < noise


def test_head_weight_zero_leaves_only_the_foreground_loss() -> None:
    targets = torch.from_numpy(make_targets(touching_pair(), "boundary"))[None]
    logits = torch.randn_like(targets)
    weighted = head_loss(logits, targets, "boundary", **{**WEIGHTS, "head_weight": 0.0})
    assert weighted == head_loss(logits[:, :1], targets[:, :1], "none", **WEIGHTS)


@pytest.mark.parametrize("head", HEADS)
def test_contact_weight_zero_gives_the_loss_without_contact_weighting(head: str) -> None:
    targets = torch.from_numpy(make_targets(touching_pair(), head))[None]
    logits = torch.randn_like(targets)
    assert torch.equal(
        head_loss(logits, targets, head, **WEIGHTS, contact_weight=0.0), head_loss(logits, targets, head, **WEIGHTS)
    )


def test_contact_weight_raises_the_loss_of_a_prediction_wrong_at_the_contacts() -> None:
    labels = touching_pair()
    targets = torch.from_numpy(make_targets(labels, "none", contact=True))[None]
    contact = targets[:, -1:] > 0
    logits = (targets[:, :1] * 2 - 1) * 6
    logits[contact] = -logits[contact]  # right everywhere except at the contacts
    plain = head_loss(logits, targets[:, :1], "none", **WEIGHTS)
    weighted = head_loss(logits, targets, "none", **WEIGHTS, contact_weight=5.0)
    assert weighted > plain
    right = (targets[:, :1] * 2 - 1) * 6  # right everywhere: the weights hardly matter
    assert head_loss(right, targets, "none", **WEIGHTS, contact_weight=5.0).item() == pytest.approx(
        head_loss(right, targets[:, :1], "none", **WEIGHTS).item(), abs=1e-3
    )


def test_contact_weight_needs_the_contact_channel() -> None:
    targets = torch.from_numpy(make_targets(touching_pair(), "boundary"))[None]
    with pytest.raises(ValueError, match="contact map"):
        head_loss(torch.zeros_like(targets), targets, "boundary", **WEIGHTS, contact_weight=1.0)


def test_activation_keeps_hover_offsets_linear_and_squashes_the_rest() -> None:
    logits = torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 3, 1, 1)
    hover = activate(logits, "hover")
    assert hover[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item())
    assert hover[0, 1:].flatten().tolist() == [0.0, 3.0]
    assert (activate(logits[:, :2], "boundary") == torch.sigmoid(logits[:, :2])).all()
