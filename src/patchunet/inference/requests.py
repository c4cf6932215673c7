"""What the served model takes and gives: images in a request, labels and nuclei in its answer.

A row of the request's `image` column is an (H, W, 3) uint8 array, PNG or TIFF bytes, or those
bytes in base64 (as JSON carries them to `mlflow models serve`). An answer's labels come back in
the form the image came: an array for an array, base64 TIFF (zlib, uint16 or uint32) for bytes.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import tifffile

from patchunet.data.images import read_rgb_bytes
from patchunet.errors import PatchUNetError

IMAGE_COLUMN = "image"
MPP_PARAM = "mpp"


def request_image(value: object, name: str, max_side: int) -> np.ndarray:
    """The (H, W, 3) uint8 image of one request row, refused in one line starting with `name`."""
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
            raise PatchUNetError(f"{name}: an array of {value.dtype} {value.shape}; expected RGB uint8 (H, W, 3)")
        if max(value.shape[:2]) > max_side:
            raise PatchUNetError(f"{name}: {value.shape[1]}x{value.shape[0]} px is larger than {max_side} px on a side")
        return value
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PatchUNetError(f"{name}: not base64 of a PNG or TIFF image") from None
    if not isinstance(value, bytes | bytearray) or not value:
        raise PatchUNetError(f"{name}: expected an RGB array, or PNG or TIFF bytes, got {type(value).__name__}")
    return read_rgb_bytes(bytes(value), name, max_side=max_side)


def request_mpp(params: dict | None, model_mpp: float) -> float:
    """The images' µm per pixel from the request's params (`mpp`), else the model's own scale."""
    from patchunet.inference.scale import parse_mpp

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
