"""What the served model accepts: arrays, PNG or TIFF bytes, base64; everything else in one line."""

from __future__ import annotations

import base64
import io

import imagecodecs
import numpy as np
import pytest
import tifffile

from patchunet.core.errors import PatchUNetError
from patchunet.serving.requests import decoded_labels, encoded_labels, request_image, request_mpp

RGB = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="rgb" if array.ndim == 3 else None)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "value",
    [RGB, imagecodecs.png_encode(RGB), tiff_bytes(RGB), base64.b64encode(imagecodecs.png_encode(RGB)).decode()],
    ids=["array", "png", "tiff", "base64 png"],
)
def test_every_accepted_form_gives_the_same_pixels(value) -> None:
    np.testing.assert_array_equal(request_image(value, "image 0", 100), RGB)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not an image at all", r"^image 3: corrupt or truncated image, or not an image"),
        ("%%% not base64", r"^image 3: not base64 of a PNG or TIFF image$"),
        (
            imagecodecs.png_encode(np.ascontiguousarray(RGB[..., 0])),
            r"^image 3: grayscale image \(20, 30\); expected RGB",
        ),
        (tiff_bytes(np.ascontiguousarray(RGB[..., 0])), r"^image 3: grayscale image"),
        (RGB[..., 0], r"^image 3: an array of uint8 \(20, 30\); expected RGB uint8"),
        (RGB.astype(np.float32), r"^image 3: an array of float32"),
        (imagecodecs.png_encode(np.zeros((10, 120, 3), np.uint8)), r"^image 3: 120x10 px is larger than 100 px"),
        (np.zeros((120, 10, 3), np.uint8), r"^image 3: 10x120 px is larger than 100 px on a side$"),
        (42, r"^image 3: expected an RGB array, or PNG or TIFF bytes, got int$"),
        (b"", r"^image 3: expected an RGB array"),
    ],
    ids=[
        "junk",
        "bad base64",
        "gray png",
        "gray tiff",
        "gray array",
        "float array",
        "wide png",
        "tall array",
        "int",
        "empty",
    ],
)
def test_bad_images_are_refused_in_one_line_naming_the_row(value, problem: str) -> None:
    with pytest.raises(PatchUNetError, match=problem) as raised:
        request_image(value, "image 3", 100)
    assert "\n" not in str(raised.value)


def test_mpp_defaults_to_the_models_and_a_bad_one_is_one_line() -> None:
    assert request_mpp(None, 0.25) == request_mpp({}, 0.25) == 0.25
    assert request_mpp({"mpp": 0.5}, 0.25) == 0.5
    with pytest.raises(PatchUNetError, match=r"^params mpp -1: must be a positive number"):
        request_mpp({"mpp": -1}, 0.25)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_labels_round_trip_through_base64_tiff(dtype) -> None:
    labels = np.arange(12, dtype=dtype).reshape(3, 4) * (70_000 if dtype == np.uint32 else 1)
    decoded = decoded_labels(encoded_labels(labels))
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, labels)
