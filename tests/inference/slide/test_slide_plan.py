"""The tile plan: the level at the model's scale, the tissue and the tiles that hold some."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from patchunet.core.config import SlideConfig
from patchunet.core.errors import DataError, PatchUNetError
from patchunet.inference.slide.plan import check_tile_scale, has_tissue, plan_tiles, slide_scale
from patchunet.io.slides import open_slide, write_pyramidal_tiff
from patchunet.postprocess.tiling import Tile

PINK, GLASS = (200, 120, 180), (236, 236, 236)


def slide_config(**changes) -> SlideConfig:
    settings = {"tile_size": 256, "tile_margin": 32, "thumbnail_max_side": 512, "tissue_saturation": 0.1}
    return SlideConfig(**{**settings, **changes})


def test_only_tiles_with_tissue_under_their_core_are_planned(tmp_path: Path) -> None:
    pixels = np.full((1024, 1024, 3), GLASS, np.uint8)
    pixels[600:900, 100:400] = PINK  # under tiles (2..3, 0..1)
    write_pyramidal_tiff(tmp_path / "slide.tif", pixels, 0.25)
    with open_slide(tmp_path / "slide.tif") as slide:
        plan = plan_tiles(slide, 0.25, 0.25, slide_config())
    assert (plan.level, plan.downsample, plan.level_mpp, plan.width, plan.height) == (0, 1.0, 0.25, 1024, 1024)
    assert len(plan.tiles) == 16
    assert [(tile.row, tile.col) for tile in plan.tissue_tiles] == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert plan.tissue_megapixels == pytest.approx(0.09, rel=0.05)


def test_the_tissue_in_a_box_is_the_thumbnails_grown_by_two_of_its_pixels(tmp_path: Path) -> None:
    pixels = np.full((1024, 1024, 3), GLASS, np.uint8)
    pixels[600:900, 100:400] = PINK
    write_pyramidal_tiff(tmp_path / "slide.tif", pixels, 0.25)
    with open_slide(tmp_path / "slide.tif") as slide:
        plan = plan_tiles(slide, 0.25, 0.25, slide_config(thumbnail_max_side=256))  # 4 px per thumbnail pixel
    tissue = plan.tissue_in((64, 512, 400, 500))  # x 64..464, y 512..1012
    assert tissue.shape == (500, 400)
    assert tissue[600 - 512 : 900 - 512, 100 - 64 : 400 - 64].all()  # all the tissue
    assert tissue[592 - 512 : 908 - 512, 92 - 64 : 408 - 64].all()  # and two thumbnail pixels around
    assert not tissue[: 592 - 512].any() and not tissue[:, 408 - 64 :].any()  # not three


def test_a_tile_has_tissue_where_the_thumbnail_shows_some_under_its_core() -> None:
    tissue = np.zeros((10, 10), bool)
    tissue[7, 7] = True
    assert has_tissue(tissue, Tile(1, 1, 50, 50, 50, 50), 0.1)
    assert not has_tissue(tissue, Tile(0, 0, 0, 0, 50, 50), 0.1)


def test_the_scale_comes_from_mpp_else_the_slide_else_is_refused() -> None:
    recorded, unrecorded = SimpleNamespace(mpp=0.25, path=Path("a.svs")), SimpleNamespace(mpp=None, path=Path("b.svs"))
    assert slide_scale(recorded, 0.5) == (0.5, "--mpp")
    assert slide_scale(recorded, None) == (0.25, "slide")
    with pytest.raises(DataError, match=r"b\.svs: records no scale"):
        slide_scale(unrecorded, None)
    with pytest.raises(PatchUNetError, match=r"--mpp 1e-09: not a microscope.s scale"):
        slide_scale(recorded, 1e-9)


def test_a_tile_too_large_at_the_models_scale_is_told_a_tile_size() -> None:
    with pytest.raises(PatchUNetError, match=r"set params\.yaml slide\.tile_size to 1250 or less"):
        check_tile_scale(Path("x5.tif"), 2048, 2.0, 0.25)
    check_tile_scale(Path("x40.tif"), 2048, 0.25, 0.25)
