"""What the served model takes and gives: images in a request, labels and nuclei in its answer.

A row of the request's `image` column is an (H, W, 3) uint8 array, PNG or TIFF bytes, or those
bytes in base64 (as JSON carries them to `mlflow models serve`). An answer's labels come back in
the form the image came: an array for an array, base64 TIFF (zlib, uint16 or uint32) for bytes.

A request is bounded before any pixel is decoded: at most `serve.max_images` images, each at most
`serve.max_image_side` px on a side both as sent and once resampled to the model's scale (an image
at twice the model's µm per pixel doubles), told from the image's header.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import tifffile

from patchunet.core.errors import PatchUNetError
from patchunet.io.images import read_rgb_bytes

IMAGE_COLUMN = "image"
MPP_PARAM = "mpp"


def request_values(model_input: object, max_images: int) -> list:
    """The rows of a request's `image` column: from a DataFrame (`dataframe_split`, `dataframe_records`)
    or a dict of columns (`{"inputs": {"image": [...]}}`); at most `max_images` of them."""
    if isinstance(model_input, dict):
        column = model_input.get(IMAGE_COLUMN)
    elif IMAGE_COLUMN in getattr(model_input, "columns", ()):
        column = model_input[IMAGE_COLUMN]
    else:
        column = None
    if column is None:
        raise PatchUNetError(f"expected a table with an {IMAGE_COLUMN!r} column of images")
    if isinstance(column, str | bytes) or (isinstance(column, np.ndarray) and column.ndim == 0):
        column = [column.item() if isinstance(column, np.ndarray) else column]  # one image, not in a list
    values = []
    for value in column:  # `{"inputs": {"image": [...]}}` reaches the model as one row holding the list
        several = isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim == 1)
        values.extend(value if several else [value])
    if not values:
        raise PatchUNetError(f"the {IMAGE_COLUMN!r} column holds no images")
    if len(values) > max_images:
        raise PatchUNetError(
            f"{len(values)} images in one request; at most {max_images} (serve.max_images): send them in several"
        )
    return values


def request_image(
    value: object, name: str, max_side: int, image_mpp: float = 1.0, model_mpp: float = 1.0
) -> np.ndarray:
    """The (H, W, 3) uint8 image of one request row, refused in one line starting with `name`: also
    where it is over `max_side` px on a side once resampled from `image_mpp` to `model_mpp`."""
    limit = largest_side(max_side, image_mpp, model_mpp)
    if limit < max_side:
        name = f"{name} (at {image_mpp:g} µm per px, {image_mpp / model_mpp:.3g}x larger at the model's scale)"
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise PatchUNetError(f"{name}: an array of {value.dtype} {value.shape}; expected RGB uint8 (H, W, 3)")
        if max(value.shape[:2]) > limit:
            raise PatchUNetError(f"{name}: {value.shape[1]}x{value.shape[0]} px is larger than {limit} px on a side")
        return value
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PatchUNetError(f"{name}: not base64 of a PNG or TIFF image") from None
    if not isinstance(value, bytes | bytearray) or not value:
        raise PatchUNetError(f"{name}: expected an RGB array, or PNG or TIFF bytes, got {type(value).__name__}")
    return read_rgb_bytes(bytes(value), name, max_side=limit)  # the header's size is checked before decoding


def largest_side(max_side: int, image_mpp: float, model_mpp: float) -> int:
    """The largest side an image at `image_mpp` may have so that it is at most `max_side` px both as
    it is and once resampled to `model_mpp` (as `resample_image` does)."""
    from patchunet.io.scale import is_same_scale, resampled_shape

    if is_same_scale(image_mpp, model_mpp) or image_mpp < model_mpp:
        return max_side
    side = min(max_side, round(max_side * model_mpp / image_mpp) + 1)
    while side > 1 and resampled_shape((side, side), image_mpp, model_mpp)[0] > max_side:
        side -= 1
    return side


def request_mpp(params: dict | None, model_mpp: float) -> float:
    """The images' µm per pixel from the request's params (`mpp`), else the model's own scale."""
    from patchunet.io.scale import parse_mpp

    value = (params or {}).get(MPP_PARAM)
    return model_mpp if value is None else parse_mpp(str(value), f"params {MPP_PARAM}")


def encoded_labels(labels: np.ndarray) -> str:
    """(H, W) instance labels as base64 of a zlib TIFF: a 1000x1000 map in tens of kB of JSON."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels, compression="zlib")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded_labels(text: str) -> np.ndarray:
    """The labels of an answer's base64 TIFF (`encoded_labels`)."""
    return tifffile.imread(io.BytesIO(base64.b64decode(text)))
