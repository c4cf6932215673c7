"""The model card reads a run's scale under its name now and under the one older runs logged."""

from __future__ import annotations

import pytest

from patchunet.serving.model_card import version_description
from patchunet.tracking import names
from patchunet.tracking.records import RunSummary


def card(params: dict[str, str]) -> str:
    run = RunSummary("run-1", "1", "train", "FINISHED", params, {}, {})
    return version_description("patchunet", 3, run, {"aji": 0.6}, {}, 256)


@pytest.mark.parametrize("param", [names.MICRONS_PER_PIXEL_PARAM, names.OLD_MICRONS_PER_PIXEL_PARAM])
def test_the_card_gives_the_training_scale_of_new_and_older_runs(param: str) -> None:
    assert "nuclei in H&E images at 0.5 µm per pixel (20x);" in card({param: "0.5"})


def test_a_scale_of_no_known_magnification_is_given_alone() -> None:
    assert "at 0.3 µm per pixel;" in card({names.MICRONS_PER_PIXEL_PARAM: "0.3"})


def test_the_card_names_your_own_images_and_their_test_list() -> None:
    text = card({names.DATA_LAYOUT_PARAM: "generic"})
    assert "Your own images" in text and "The images named in its test.txt gave the test scores" in text


@pytest.mark.parametrize("params", [{names.DATA_LAYOUT_PARAM: "monuseg"}, {}])
def test_the_card_of_monuseg_and_of_older_runs_names_monuseg(params: dict[str, str]) -> None:
    text = card(params)
    assert "MoNuSeg 2018 training images" in text and "The official test set (14 images)" in text
