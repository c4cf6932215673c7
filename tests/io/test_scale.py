"""Image scale: magnifications, resampling to the model's scale and labels back, recorded TIFF scales."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import TEST_DIR

from patchunet.core.errors import PatchUNetError
from patchunet.io.scale import (
    chosen_scale,
    labels_to_shape,
    mpp_of_magnification,
    parse_mpp,
    recorded_mpp,
    resample_image,
)


def rgb(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def blocks(shape: tuple[int, int], step: int) -> np.ndarray:
    """(H, W) int32 labels: one id per step x step block, 0 on every other block."""
    rows, cols = np.indices(shape)
    ids = (rows // step) * (shape[1] // step + 1) + cols // step + 1
    return np.where((rows // step + cols // step) % 2 == 0, ids, 0).astype(np.int32)


def test_magnifications_are_ten_over_m_microns_per_pixel() -> None:
    assert [mpp_of_magnification(text) for text in ("40x", "20X", " 10x ", "20")] == [0.25, 0.5, 1.0, 0.5]


@pytest.mark.parametrize("text", ["30x", "x", "", "forty"])
def test_an_unknown_magnification_is_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(PatchUNetError, match=r"^--magnification .*unknown magnification; use one of 10x, 20x, 40x"):
        mpp_of_magnification(text)


@pytest.mark.parametrize("text", ["0", "-0.25", "nan", "inf", "abc", ""])
def test_an_mpp_that_is_not_positive_and_finite_is_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(PatchUNetError) as caught:
        parse_mpp(text)
    assert str(caught.value).startswith(f"--mpp {text}: must be a positive number") and "\n" not in str(caught.value)


def test_resampling_to_the_model_scale_and_labels_back_round_trips_shapes() -> None:
    image = rgb((101, 150))
    assert resample_image(image, 0.5, 0.25).shape == (202, 300, 3)  # 20x image, 40x model: twice the side
    assert resample_image(image, 0.125, 0.25).shape == (50, 75, 3)  # 80x image: half the side
    assert resample_image(image, 0.5, 0.25).dtype == np.uint8
    assert labels_to_shape(np.zeros((202, 300), np.int32), image.shape).shape == (101, 150)


def test_equal_scales_return_the_image_and_labels_themselves() -> None:
    image, labels = rgb((64, 64)), blocks((64, 64), 8)
    assert resample_image(image, 0.25, 0.25 + 5e-7) is image
    assert labels_to_shape(labels, (64, 64, 3)) is labels


def test_area_averaging_keeps_the_mean_colour_when_shrinking() -> None:
    image = rgb((128, 128))
    assert np.abs(resample_image(image, 0.125, 0.25).mean(axis=(0, 1)) - image.mean(axis=(0, 1))).max() < 1.0


def test_labels_mapped_up_and_back_are_the_labels_again() -> None:
    labels = blocks((60, 90), 6)
    up = labels_to_shape(labels, (120, 180))
    assert set(np.unique(up)) == set(np.unique(labels))
    np.testing.assert_array_equal(labels_to_shape(up, labels.shape), labels)


def test_labels_mapped_down_invent_no_id_and_drop_only_what_is_narrower_than_a_step() -> None:
    labels = blocks((64, 64), 8)
    labels[33, 1] = 999  # a one-pixel nucleus
    down = labels_to_shape(labels, (16, 16))
    assert set(np.unique(down)) <= set(np.unique(labels))
    assert 999 not in down and set(np.unique(labels)) - set(np.unique(down)) == {999}


@pytest.mark.parametrize(("image_mpp", "refused"), [(2.0, False), (2.01, True), (0.25 / 8, False), (0.031, True)])
def test_scales_more_than_8x_from_the_model_are_refused(image_mpp: float, refused: bool) -> None:
    image = rgb((16, 16))
    if refused:
        with pytest.raises(PatchUNetError, match=r"x from the model's 0.25 µm/px; scales more than 8x apart"):
            resample_image(image, image_mpp, 0.25)
    else:
        assert resample_image(image, image_mpp, 0.25).ndim == 3


def test_an_image_too_large_at_the_model_scale_is_refused_before_resampling(monkeypatch) -> None:
    monkeypatch.setattr("patchunet.io.images.MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(PatchUNetError, match=r"becomes 120x120 px, over 0.01 megapixels"):
        resample_image(rgb((60, 60)), 0.5, 0.25)


def test_an_image_is_segmented_at_the_model_scale_and_its_labels_mapped_back_to_its_shape() -> None:
    at_scale = resample_image(rgb((50, 70)), 0.5, 0.25)
    labels = labels_to_shape(blocks(at_scale.shape[:2], 10), (50, 70, 3))
    assert at_scale.shape == (100, 140, 3) and labels.shape == (50, 70)
    np.testing.assert_array_equal(labels, blocks((100, 140), 10)[::2, ::2])


def test_the_option_wins_then_a_recorded_scale_over_10_percent_off_then_the_model() -> None:
    assert chosen_scale(0.5, 1.0, 0.25) == (0.5, "option")
    assert chosen_scale(None, 0.5, 0.25) == (0.5, "file")
    assert chosen_scale(None, 0.2527, 0.25) == (0.25, "model")
    assert chosen_scale(None, None, 0.25) == (0.25, "model")


def test_recorded_scales_are_read_from_aperio_descriptions_and_tiff_resolutions(tmp_path: Path) -> None:
    image = rgb((16, 16))
    aperio = tmp_path / "aperio.tif"
    tifffile.imwrite(aperio, image, photometric="rgb", description="Aperio Image Library v12|AppMag = 20|MPP = 0.4990")
    per_cm = tmp_path / "per_cm.tif"
    tifffile.imwrite(per_cm, image, photometric="rgb", resolution=(20_000, 20_000), resolutionunit="CENTIMETER")
    assert recorded_mpp(aperio) == pytest.approx(0.499)
    assert recorded_mpp(per_cm) == pytest.approx(0.5)


def test_screen_resolutions_unitless_tiffs_and_pngs_record_no_scale(tmp_path: Path) -> None:
    image = rgb((16, 16))
    screen = tmp_path / "screen.tif"
    tifffile.imwrite(screen, image, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image, photometric="rgb")
    png = tmp_path / "image.png"
    png.write_bytes(imagecodecs.png_encode(image))
    assert [recorded_mpp(path) for path in (screen, plain, png)] == [None, None, None]


def test_the_real_monuseg_test_images_record_no_usable_scale(real_monuseg: Path) -> None:
    """They carry 72 dpi, a screen default: predict must assume, and say so, not read 353 µm/px."""
    assert recorded_mpp(real_monuseg / TEST_DIR / "TCGA-2Z-A9J9-01A-01-TS1.tif") is None
