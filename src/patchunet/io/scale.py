"""Image scale: microns per pixel (mpp), objective magnification, and resampling to a model's scale.

A model sees nuclei at the size it learned them: one trained on MoNuSeg (40x, 0.25 µm/px) finds a
20x image's nuclei half as wide as it expects. `resample_image` brings an image to the model's
scale, and `labels_to_shape` its labels back onto the image's own pixels (inference/nuclei.py).

Convention: an objective magnification M means 10 / M µm per pixel (40x = 0.25, 20x = 0.5,
10x = 1.0), the scale of Aperio and most whole-slide scanners at those objectives. A scanner that
differs (0.22 or 0.27 µm/px at 40x) is given exactly with an mpp.

Imports nothing heavy at the top: `patchunet predict --help` lists MAGNIFICATIONS.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from patchunet.core.config import PLAUSIBLE_MPP
from patchunet.core.errors import PatchUNetError

if TYPE_CHECKING:
    import numpy as np

MAGNIFICATIONS = {"10x": 1.0, "20x": 0.5, "40x": 0.25}
"""The magnifications understood, as µm per pixel."""
MAX_SCALE_RATIO = 8.0
"""Image and model scales further apart than this, either way, are refused: the nuclei would be
blurred up from a few pixels, or averaged away."""
SAME_SCALE_TOLERANCE = 1e-6
RECORDED_SCALE_TOLERANCE = 0.10
"""A scale a file records is used only where it is this far (relative) from the model's."""
RESOLUTION_UNIT_UM = {2: 25_400.0, 3: 10_000.0}
"""µm per TIFF ResolutionUnit: inch, centimetre."""
APERIO_MPP = re.compile(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+)", re.IGNORECASE)


def parse_mpp(text: str, option: str = "--mpp") -> float:
    """µm per pixel from the text of an option; refused in one line naming it."""
    try:
        mpp = float(text)
    except ValueError:
        mpp = math.nan
    if not math.isfinite(mpp) or mpp <= 0:
        raise PatchUNetError(f"{option} {text}: must be a positive number of µm per pixel (MoNuSeg, 40x: 0.25)")
    return mpp


def mpp_of_magnification(text: str, option: str = "--magnification") -> float:
    """µm per pixel of a magnification such as "40x", "20X" or "20" (10 / M, see the module note)."""
    key = text.strip().lower().removesuffix("x")
    for name, mpp in MAGNIFICATIONS.items():
        if key and key == name.removesuffix("x"):
            return mpp
    known = ", ".join(MAGNIFICATIONS)
    raise PatchUNetError(f"{option} {text}: unknown magnification; use one of {known}, or give --mpp")


def scale_label(mpp: float) -> str:
    """ "0.5 µm/px (20x)", the magnification shown where the mpp is one of MAGNIFICATIONS."""
    names = [name for name, value in MAGNIFICATIONS.items() if is_same_scale(mpp, value)]
    return f"{mpp:g} µm/px" + (f" ({names[0]})" if names else "")


def is_same_scale(image_mpp: float, model_mpp: float) -> bool:
    return abs(image_mpp - model_mpp) <= SAME_SCALE_TOLERANCE


def resampled_shape(shape: tuple[int, ...], image_mpp: float, model_mpp: float) -> tuple[int, int]:
    """(height, width) of an image of `shape` once resampled from `image_mpp` to `model_mpp`."""
    factor = image_mpp / model_mpp
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def check_scale(shape: tuple[int, ...], image_mpp: float, model_mpp: float, what: str = "image scale") -> None:
    """Refuse, in one line starting with `what`, a scale more than MAX_SCALE_RATIO from the model's,
    or one at which the resampled image would exceed MAX_IMAGE_PIXELS."""
    from patchunet.io.images import MAX_IMAGE_PIXELS

    ratio = image_mpp / model_mpp
    if not 1 / MAX_SCALE_RATIO <= ratio <= MAX_SCALE_RATIO:
        raise PatchUNetError(
            f"{what}: {image_mpp:g} µm/px is {max(ratio, 1 / ratio):.3g}x from the model's {model_mpp:g} µm/px; "
            f"scales more than {MAX_SCALE_RATIO:g}x apart are refused"
        )
    height, width = resampled_shape(shape, image_mpp, model_mpp)
    if height * width > MAX_IMAGE_PIXELS:
        raise PatchUNetError(
            f"{what}: at the model's {model_mpp:g} µm/px this image becomes {width}x{height} px, "
            f"over {MAX_IMAGE_PIXELS / 1e6:g} megapixels; crop it first"
        )


def resample_image(image: np.ndarray, image_mpp: float, model_mpp: float) -> np.ndarray:
    """An (H, W, 3) uint8 image at `image_mpp` resampled to `model_mpp`: area averaging where it
    shrinks, bilinear where it grows. The image itself, not a copy, where the scales are equal."""
    import cv2
    import numpy as np

    if is_same_scale(image_mpp, model_mpp):
        return image
    check_scale(image.shape, image_mpp, model_mpp)
    height, width = resampled_shape(image.shape, image_mpp, model_mpp)
    interpolation = cv2.INTER_AREA if image_mpp < model_mpp else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) instance labels resampled to (H, W) = shape[:2] by nearest neighbour, ids kept.

    Each output pixel takes the label under its centre, so no id is invented. Mapping onto a smaller
    shape can drop a nucleus narrower than a step, leaving a gap in the ids; they are not renumbered.
    The labels themselves, not a copy, where the shape already matches.
    """
    import numpy as np

    height, width = shape[:2]
    if labels.shape == (height, width):
        return labels
    rows = np.minimum(((np.arange(height) + 0.5) * (labels.shape[0] / height)).astype(np.intp), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (labels.shape[1] / width)).astype(np.intp), labels.shape[1] - 1)
    return labels[rows][:, cols]


def chosen_scale(given: float | None, recorded: float | None, model_mpp: float) -> tuple[float, str]:
    """The µm per pixel to segment an image at, and where it comes from: "option" (given by the
    user), "file" (recorded in it and more than RECORDED_SCALE_TOLERANCE from the model's) or
    "model" (assumed to be the model's)."""
    if given is not None:
        return given, "option"
    if recorded is not None and abs(recorded / model_mpp - 1) > RECORDED_SCALE_TOLERANCE:
        return recorded, "file"
    return model_mpp, "model"


def recorded_mpp(path: Path) -> float | None:
    """The µm per pixel a TIFF records, or None: Aperio's `MPP = x` in its ImageDescription, else
    its XResolution in pixels per inch or centimetre. A value outside PLAUSIBLE_MPP counts as none."""
    import tifffile

    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            description = tags.get("ImageDescription")
            resolution = tags.get("XResolution")
            unit = tags.get("ResolutionUnit")
            found = APERIO_MPP.search(str(description.value)) if description is not None else None
            if found:
                mpp = float(found.group(1))
            elif resolution is not None and unit is not None and int(unit.value) in RESOLUTION_UNIT_UM:
                numerator, denominator = resolution.value
                mpp = RESOLUTION_UNIT_UM[int(unit.value)] * denominator / numerator if numerator else math.nan
            else:
                return None
    except (OSError, ValueError, TypeError, IndexError):
        return None
    return mpp if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None
