"""Reading and writing images: H&E tiles as RGB and instance label maps.

Every reader raises `DataError` naming the file, so a bad file anywhere in the pipeline ends in
one clear line. Readers check the size an image declares in its header before decoding it, so a
small file declaring a huge image is refused at once. Writers are atomic (`files.atomic_file`).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from patchunet.core.errors import DataError
from patchunet.core.files import atomic_file

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image any reader decodes: 100 megapixels (300 MB as RGB). MoNuSeg tiles are 1 MP and a
6000x6000 `patchunet predict` input is 36 MP, so this refuses only decompression bombs: a few MB of
PNG or TIFF declaring 30000x30000 would otherwise take gigabytes and seconds before failing."""


# Pillow identifies a non-TIFF file and reads its declared size without decoding it; imagecodecs
# then decodes it with that one codec (asked to guess, it reports every codec it tried).
CODEC_BY_FORMAT = {"PNG": "png", "JPEG": "jpeg", "BMP": "bmp", "GIF": "gif", "WEBP": "webp"}


def read_rgb_image(path: Path, *, max_side: int | None = None) -> np.ndarray:
    """Read an H&E image as (H, W, 3) uint8, refusing what the model cannot take.

    TIFFs go through tifffile (LZW and PackBits need imagecodecs); other formats through imagecodecs.
    An image over MAX_IMAGE_PIXELS, or with a side over `max_side`, is refused before it is decoded.
    """
    image = _read_array(path, max_side)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise DataError(path, f"grayscale image {image.shape}; expected RGB (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else image.ndim
        kind = "RGBA" if image.ndim == 3 and image.shape[2] == 4 else f"{channels}-channel"
        raise DataError(path, f"{kind} image of shape {image.shape}; expected RGB (H, W, 3)")
    if image.dtype != np.uint8:
        raise DataError(path, f"{image.dtype} pixels; expected 8-bit (uint8) RGB")
    return image


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_rgb_bytes(content: bytes, name: str, *, max_side: int | None = None) -> np.ndarray:
    """`read_rgb_image` of an image sent as bytes (an upload, a request), which errors call `name`.

    TIFF is told by its first bytes, any other format by Pillow; the bytes go to a temporary file
    of a fixed name, so nothing the sender chose reaches the file system.
    """
    import tempfile

    suffix = ".tif" if content[:4] in TIFF_MAGIC else ""
    with tempfile.TemporaryDirectory(prefix="patchunet-image-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(content)
        try:
            return read_rgb_image(path, max_side=max_side)
        except DataError as exc:  # a library's own message may quote the temporary path: it is not the sender's
            raise DataError(name, exc.problem.replace(str(path), name)) from None


MAX_LABEL_ID = int(np.iinfo(np.uint32).max)
"""Largest nucleus id a label map may hold: label maps are written as uint16 or uint32."""


def read_label_image(path: Path, *, max_side: int | None = None) -> np.ndarray:
    """Read an instance label map (H, W) with 0 = background and one id per nucleus.

    Ids must be 0..MAX_LABEL_ID: a negative id would wrap to a large one in the unsigned maps the
    stages write, and a larger one would not fit them.
    """
    labels = _read_array(path, max_side)
    if labels.ndim != 2:
        raise DataError(path, f"label map of shape {labels.shape}; expected a single-channel (H, W) image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"{labels.dtype} label map; expected integer ids")
    if labels.min() < 0:
        raise DataError(path, f"label map holds negative ids (down to {labels.min()}); ids are 0 (background) or more")
    if labels.max() > MAX_LABEL_ID:
        raise DataError(path, f"label map holds ids up to {labels.max()}, over the 32-bit maximum {MAX_LABEL_ID}")
    return labels


def _read_array(path: Path, max_side: int | None) -> np.ndarray:
    if path.is_dir():
        raise DataError(path, "is a folder, not an image file")
    if not path.is_file():
        raise DataError(path, "file not found")
    read = _read_tiff if path.suffix.lower() in (".tif", ".tiff") else _read_other
    array = read(path, max_side)
    if array.size == 0:  # tifffile returns an empty array for a file whose first page is unreadable
        raise DataError(path, "corrupt or truncated image (no readable pixels)")
    return array


def _read_tiff(path: Path, max_side: int | None) -> np.ndarray:
    """The first series, with planar (S, H, W) samples moved last as (H, W, S)."""
    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)  # a broken file gets our one line, not tifffile's warnings too
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise DataError(path, "corrupt or truncated image (no readable pixels)")
            series = tif.series[0]
            sides = dict(zip(series.axes, series.shape, strict=True))
            _check_single_image(path, series.axes, series.shape)
            pixels = math.prod(n for axis, n in sides.items() if axis != "S")
            _check_declared_size(path, sides.get("X", 0), sides.get("Y", 0), pixels, max_side)
            array = series.asarray()
            if "S" in series.axes:
                array = np.moveaxis(array, series.axes.index("S"), -1)
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many types for a broken file
        raise DataError(path, f"corrupt or truncated image ({_first_line(exc)})") from None
    finally:
        tifffile_log.setLevel(level)
    return array


IMAGE_AXES = "YXS"
"""A TIFF series' axes of one image: rows, columns and samples (channels); any other is a stack of pages."""


def _check_single_image(path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """Refuse a series that stacks several pages (a multi-page TIFF or a z-stack): not one image."""
    pages = math.prod(n for axis, n in zip(axes, shape, strict=True) if axis not in IMAGE_AXES)
    if pages > 1:
        raise DataError(
            path,
            f"a TIFF of {pages} pages (shape {shape}, axes {axes}); expected a single image: save one page per file",
        )


def _read_other(path: Path, max_side: int | None) -> np.ndarray:
    import imagecodecs

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as header:  # reads the header only
                image_format, (width, height) = header.format, header.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit, itself below ours
        raise DataError(path, f"declares an image over the limit of {_megapixels()} ({_first_line(exc)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"corrupt or truncated image, or not an image ({_first_line(exc)})") from None
    _check_declared_size(path, width, height, width * height, max_side)
    codec = CODEC_BY_FORMAT.get(image_format or "")
    if codec is None:
        raise DataError(path, f"unsupported image format {image_format}; use TIFF or PNG")
    try:
        return imagecodecs.imread(path, codec=codec)
    except Exception as exc:  # imagecodecs raises codec-specific types
        raise DataError(path, f"corrupt or truncated {image_format} ({_first_line(exc)})") from None


def _check_declared_size(path: Path, width: int, height: int, pixels: int, max_side: int | None) -> None:
    if pixels > MAX_IMAGE_PIXELS:
        raise DataError(
            path, f"declares a {width}x{height} image ({pixels:,} pixels), over the limit of {_megapixels()}"
        )
    if max_side is not None and max(width, height) > max_side:
        raise DataError(path, f"{width}x{height} px is larger than {max_side} px on a side")


def _megapixels() -> str:
    return f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def write_label_tiff(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) labels as a zlib-compressed TIFF, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(label_tiff_bytes(labels))


def label_tiff_bytes(labels: np.ndarray) -> bytes:
    """(H, W) labels as the bytes of a zlib-compressed TIFF, for writers that commit several files together."""
    import io

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels, compression="zlib")
    return buffer.getvalue()


def write_rgb_tiff(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as a zlib-compressed RGB TIFF, atomically."""
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, image, photometric="rgb", compression="zlib")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(png_bytes(image))


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as the bytes of a PNG."""
    import imagecodecs

    return imagecodecs.png_encode(image)
