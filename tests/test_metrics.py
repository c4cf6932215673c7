import numpy as np
import pytest

from patchunet.metrics import PixelCounts


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
