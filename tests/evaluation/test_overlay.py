import numpy as np

from patchunet.evaluation.overlay import (
    SEPARATOR_WIDTH,
    match_overlay,
    prediction_overlay,
    truth_and_prediction_overlay,
)
from patchunet.io.drawing import BLUE, GREEN, RED, YELLOW


def colour_pixels(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == colour, axis=-1).sum())


def test_match_overlay_colours_matches_misses_and_false_positives() -> None:
    image = np.full((40, 40, 3), 200, np.uint8)
    truth = np.zeros((40, 40), np.uint16)
    truth[2:12, 2:12], truth[20:30, 20:30] = 1, 2  # nucleus 2 is missed
    predicted = np.zeros((40, 40), np.uint16)
    predicted[2:12, 3:13], predicted[30:38, 2:10] = 7, 9  # 7 matches nucleus 1; 9 is a false positive
    picture = match_overlay(image, truth, predicted)
    truth_half, prediction_half = picture[:, :40], picture[:, 40 + SEPARATOR_WIDTH :]
    assert picture.shape == (40, 80 + SEPARATOR_WIDTH, 3)
    assert colour_pixels(truth_half, GREEN) > 0 and colour_pixels(truth_half, BLUE) > 0
    assert colour_pixels(truth_half[20:30, 20:30], BLUE) > 0 and colour_pixels(truth_half, RED) == 0
    assert colour_pixels(prediction_half[2:12, 3:13], GREEN) > 0
    assert colour_pixels(prediction_half[30:38, 2:10], RED) > 0 and colour_pixels(prediction_half, BLUE) == 0


def test_prediction_overlay_outlines_without_touching_the_input() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    labels = np.zeros((20, 20), np.uint16)
    labels[5:15, 5:15] = 1
    out = prediction_overlay(image, labels)
    assert colour_pixels(out, YELLOW) == 36 and out[10, 10].tolist() == [0, 0, 0]
    assert image.max() == 0


def test_truth_and_prediction_overlay_draws_both_in_one_picture_at_the_chosen_opacity() -> None:
    image = np.zeros((30, 30, 3), np.uint8)
    truth, predicted = np.zeros((30, 30), np.uint16), np.zeros((30, 30), np.uint16)
    truth[2:10, 2:10], predicted[15:25, 15:25] = 1, 4
    out = truth_and_prediction_overlay(image, truth, predicted)
    assert colour_pixels(out[:12, :12], GREEN) == 28 and colour_pixels(out[12:, 12:], YELLOW) == 36
    faint = truth_and_prediction_overlay(image, truth, predicted, opacity=0.5)
    assert faint[15, 15].tolist() == [127, 115, 0]
