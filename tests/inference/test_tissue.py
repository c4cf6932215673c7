"""Tissue found by its stain: glass, dust and grey specks are not tissue."""

from __future__ import annotations

import numpy as np

from patchunet.inference.tissue import tissue_mask


def test_stained_tissue_is_found_and_glass_specks_and_grey_are_not() -> None:
    picture = np.full((100, 100, 3), 240, np.uint8)
    picture[20:60, 20:70] = (200, 120, 180)  # H&E pink-purple
    picture[40, 40] = (240, 240, 240)  # a glass pixel inside tissue: a hole, filled
    picture[80:82, 80:82] = (200, 120, 180)  # a speck of stain on the glass: dust
    picture[5:15, 80:95] = (90, 90, 90)  # a grey smudge, unsaturated: not tissue
    mask = tissue_mask(picture, 0.08)
    assert mask[20:60, 20:70].all()
    assert mask.sum() == 40 * 50
