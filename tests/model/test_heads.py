"""Instance-head targets, activations and losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import disc_patches
from skimage.draw import disk

from patchunet.data.dataset import PatchDataset
from patchunet.model.heads import (
    activate,
    centre_offsets,
    contact_map,
    head_loss,
    make_targets,
    normalised_distance,
    output_channels,
)

HEADS = ["none", "boundary", "distance", "hover"]
WEIGHTS = {"bce_weight": 1.0, "dice_weight": 1.0, "head_weight": 1.0}


def touching_pair() -> np.ndarray:
    """Two touching discs (ids 1 and 2) and a small one (id 5) apart, in a 60x90 map."""
    labels = np.zeros((60, 90), np.uint16)
    labels[disk((30, 25), 12, shape=labels.shape)] = 1
    labels[disk((30, 47), 12, shape=labels.shape)] = 2  # overwrites the overlap: they share a border
    labels[disk((10, 80), 4, shape=labels.shape)] = 5
    return labels


@pytest.mark.parametrize("head", HEADS)
def test_targets_have_the_heads_channels_and_the_foreground_first(head: str) -> None:
    labels = touching_pair()
    targets = make_targets(labels, head)
    assert targets.shape == (output_channels(head), *labels.shape) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[0], labels > 0)
    assert not targets[1:, labels == 0].any()  # every head map is 0 on the background


def test_boundary_target_separates_touching_nuclei() -> None:
    labels = touching_pair()
    boundary = make_targets(labels, "boundary")[1] > 0
    assert boundary[labels == 1].any() and boundary[labels == 2].any() and boundary[labels == 5].any()
    interiors = (labels > 0) & ~boundary
    from scipy import ndimage

    _, pieces = ndimage.label(interiors)
    assert pieces == 3  # without the boundary, the touching pair falls apart


def test_distance_target_peaks_at_one_in_every_nucleus_whatever_its_size() -> None:
    labels = touching_pair()
    distance = normalised_distance(labels)
    for nucleus in (1, 2, 5):
        assert distance[labels == nucleus].max() == pytest.approx(1.0)
        assert distance[labels == nucleus].min() > 0
    assert distance[30, 25] == pytest.approx(1.0, abs=0.1)  # the centre of disc 1


def test_hover_targets_point_away_from_each_centre_in_minus_one_to_one() -> None:
    labels = touching_pair()
    x_offset, y_offset = centre_offsets(labels)
    assert x_offset.min() == -1.0 and x_offset.max() == 1.0 and np.abs(y_offset).max() == 1.0
    assert x_offset[30, 15] < 0 < x_offset[30, 33]  # left and right of disc 1's centre (col 25)
    assert y_offset[20, 25] < 0 < y_offset[40, 25]
    assert labels[30, 34] == 1 and labels[30, 36] == 2
    assert x_offset[30, 34] > 0 > x_offset[30, 36]  # the seam between the discs: each points to its own centre


def test_online_augmentation_makes_targets_from_the_augmented_labels() -> None:
    from patchunet.core.config import AugmentConfig
    from patchunet.data.augment import build_augmentation

    patches = disc_patches(4, size=32, seed=3)
    augmentation = build_augmentation(AugmentConfig(1, 0, 20.0, 0.2, 0.1, 0.1, "hestain"))
    plain = PatchDataset(patches, None, seed=0, head="distance")
    augmented = PatchDataset(patches, augmentation, seed=0, head="distance")
    _, targets = augmented[1]
    assert targets.shape == (2, 32, 32)
    assert not torch.equal(targets, plain[1][1])  # the geometry changed the targets...
    foreground, distance = targets.numpy()
    assert ((distance > 0) <= (foreground > 0)).all()  # ...and the distance still lies on the nuclei it came with
    assert distance.max() == pytest.approx(1.0)


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


def test_contact_map_marks_where_the_pair_touches_and_nowhere_else() -> None:
    labels = touching_pair()
    contact = contact_map(labels)
    assert contact.dtype == np.float32 and set(np.unique(contact)) == {0.0, 1.0}
    assert contact[30, 34] == contact[30, 36] == 1  # the seam, on both sides
    assert not contact[:, :20].any() and not contact[:, 55:].any()  # far from the seam, and disc 5
    assert not contact[labels == 5].any()


def test_contact_map_marks_a_background_gap_between_close_nuclei() -> None:
    labels = np.zeros((20, 20), np.uint32)
    labels[5:15, 2:9] = 70_000
    labels[5:15, 11:18] = 70_001  # a two-pixel gap at columns 9 and 10
    contact = contact_map(labels)
    assert contact[3:17, 9:11].all()  # the gap, and up to two pixels past its ends
    assert set(np.nonzero(contact)[1]) == {9, 10}  # columns 8 and 11 are three pixels from the other nucleus


def test_contact_channel_comes_last_and_is_no_target_of_the_head() -> None:
    labels = touching_pair()
    targets = make_targets(labels, "boundary", contact=True)
    assert targets.shape == (output_channels("boundary") + 1, *labels.shape)
    np.testing.assert_array_equal(targets[:-1], make_targets(labels, "boundary"))
    np.testing.assert_array_equal(targets[-1], contact_map(labels))


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
