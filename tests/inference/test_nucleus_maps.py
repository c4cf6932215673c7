"""An image's nuclei: the network's maps only where needed, at the model's scale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from conftest import tiny_network

from patchunet.core.config import EvalConfig, load_params, parse_section
from patchunet.inference.nuclei import nucleus_maps

ROOT = Path(__file__).resolve().parents[2]


def test_the_needed_pixels_follow_the_image_to_the_models_scale() -> None:
    cfg = dataclasses.replace(parse_section(EvalConfig, load_params(ROOT / "params.yaml"), "eval"), overlap=16)
    image = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)  # at 0.5 µm/px
    needed = np.zeros((200, 200), bool)
    needed[:30, :30] = True  # a corner of tissue: 60 px of the model's 400 px image
    # windows of 64 every 48 px over the image padded by 8: those at rows and columns -8..56 and
    # 40..104 hold the corner; the next start at 88
    maps = nucleus_maps(tiny_network(), image, cfg, 64, 0.5, needed)
    whole = nucleus_maps(tiny_network(), image, cfg, 64, 0.5)
    assert maps.shape == whole.shape == (1, 400, 400)
    assert np.array_equal(maps[:, :88, :88], whole[:, :88, :88])  # only windows that ran cover these
    assert (maps[:, 104:, :] == 0).all() and (maps[:, :, 104:] == 0).all()  # no window ran here
