"""Instance-head targets made from the instance labels, and the dataset that makes them after augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import disc_patches, touching_pair

from patchunet.data.dataset import PatchDataset
from patchunet.data.targets import centre_offsets, contact_map, make_targets, normalised_distance
from patchunet.model.heads import output_channels

HEADS = ["none", "boundary", "distance", "hover"]


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
