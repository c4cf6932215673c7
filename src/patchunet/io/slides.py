"""Whole-slide images through tiffslide: levels, scale, regions and a thumbnail, in bounded memory.

tiffslide reads SVS, NDPI, pyramidal (or plain tiled) TIFF and the other TIFF-based formats it
knows; a file it cannot open gets one line naming it. Coordinates are (x, y) pixels of the level
asked for, as tiffslide's `level_dimensions`; level 0 is the full resolution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from patchunet.core.errors import DataError, first_line
from patchunet.io.scale import PLAUSIBLE_MPP, RECORDED_SCALE_TOLERANCE

if TYPE_CHECKING:
    from tiffslide import TiffSlide

LIBRARY_LOGGERS = ("tifffile", "tiffslide", "zarr", "asyncio", "imagecodecs")
"""Loggers whose warnings about a broken file (tifffile's "shaped series raised ...", zarr's
"Task was destroyed") would bury the one line that names the file and the problem."""
THUMBNAIL_CHUNK = 512
"""Thumbnail pixels read per chunk where the smallest level is too large to read whole."""


@dataclasses.dataclass
class Slide:
    """An open slide: close it (or use it as a context manager) to release the file."""

    path: Path
    handle: TiffSlide
    level_dimensions: tuple[tuple[int, int], ...]
    """(width, height) per level"""
    level_downsamples: tuple[float, ...]
    mpp: float | None
    """µm per level-0 pixel, where the slide records a plausible one"""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.handle.close()


def open_slide(path: Path) -> Slide:
    """Open a slide, refusing in one line a missing file, one tiffslide does not read, and pixels
    that are not 8-bit RGB (16-bit, float, grayscale), as `patchunet predict` refuses them."""
    import tiffslide

    if not path.is_file():
        raise DataError(path, "no such slide file")
    try:
        with quiet_libraries():
            handle = tiffslide.TiffSlide(path)
            dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
            downsamples = tuple(float(d) for d in handle.level_downsamples)
            mpp = handle.properties.get("tiffslide.mpp-x")
            corner = np.asarray(handle.read_region((0, 0), len(dimensions) - 1, (1, 1), as_array=True))
    except Exception as exc:  # tifffile, zarr and imagecodecs raise many kinds; all mean "not readable"
        raise DataError(
            path, f"not a slide tiffslide reads (SVS, NDPI, pyramidal TIFF): {first_line(exc) or type(exc).__name__}"
        ) from None
    slide = Slide(path, handle, dimensions, downsamples, _plausible_mpp(mpp))
    try:
        _check_tiles(path, handle)
        _check_pixels(path, corner)
    except DataError:
        slide.close()
        raise
    return slide


def _plausible_mpp(recorded: object) -> float | None:
    """The recorded µm per pixel as a float, or None where it is missing, not a number (an Aperio
    description's `MPP = abc`) or outside PLAUSIBLE_MPP."""
    try:
        mpp = float(recorded)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return mpp if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


def _check_tiles(path: Path, handle: TiffSlide) -> None:
    """Refuse a tiled level that declares more tiles than the file holds (its size tags altered or
    the file cut short): reading it would pad the missing tiles for hours instead of failing.

    The count is only sound where the tiles are the file's own TileOffsets. An NDPI's are not:
    tifffile makes virtual tiles of its JPEG, one per restart interval found through the McuStarts
    tag, so their count follows the JPEG, not the size tags. Such files are not checked. This is
    tifffile's only virtual tiling (its `TiffPage` with `is_ndpi`); a strip-stored level (NDPI's
    without McuStarts, any plain TIFF) is not tiled and never checked, and Philips' padded size
    tags only shrink when tifffile corrects them, so their count is never short.
    """
    tif = handle.ts_tifffile
    if tif.is_ndpi:
        return
    for series in tif.series[:1]:  # the series tiffslide reads
        for level, page in enumerate(series.levels):
            page = page.keyframe
            if not page.is_tiled or page.is_ndpi:
                continue
            declared, held = math.prod(page.chunked), len(page.dataoffsets)
            if held < declared:
                height, width = page.imagelength, page.imagewidth
                raise DataError(
                    path,
                    f"level {level} declares {width}x{height} px in {declared:,} tiles but the file holds "
                    f"{held:,}: a damaged or altered file",
                )


def _check_pixels(path: Path, pixels: np.ndarray) -> None:
    """Refuse a slide whose pixels (a region read from it) are not 8-bit RGB or RGBA."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if channels == 1:
        raise DataError(path, "grayscale slide; expected RGB (H&E)")
    if channels not in (3, 4):
        raise DataError(path, f"{channels}-channel slide; expected RGB (H&E)")
    if pixels.dtype != np.uint8:
        raise DataError(path, f"{pixels.dtype} pixels; expected 8-bit (uint8) RGB")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence, for a block, the warnings and log lines tifffile, zarr and asyncio emit about a
    broken file: the error raised names the file and the problem in one line."""
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def read_region(slide: Slide, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB of `level` from (x, y) in that level's pixels, refused in one
    line naming the slide, level and place where its tiles cannot be decoded."""
    scale = slide.level_downsamples[level]
    try:
        with quiet_libraries():
            region = slide.handle.read_region(
                (round(x * scale), round(y * scale)), level, (width, height), as_array=True, padding=True
            )
    except Exception as exc:  # a corrupt tile surfaces as a codec, zarr or tifffile error
        raise DataError(
            slide.path, f"level {level} is unreadable at x={x}, y={y}: {first_line(exc) or type(exc).__name__}"
        ) from None
    return np.ascontiguousarray(np.asarray(region)[..., :3])  # open_slide refused all but uint8 RGB(A)


def level_for_scale(slide: Slide, slide_mpp: float, model_mpp: float) -> int:
    """The coarsest level still at least as fine as the model's scale (within the tolerance a
    recorded scale gets): less to read, and nothing blurred up."""
    fine_enough = [
        level
        for level, downsample in enumerate(slide.level_downsamples)
        if slide_mpp * downsample <= model_mpp * (1 + RECORDED_SCALE_TOLERANCE)
    ]
    return max(fine_enough, key=lambda level: slide.level_downsamples[level], default=0)


def thumbnail(slide: Slide, max_side: int) -> tuple[np.ndarray, float]:
    """(RGB thumbnail of at most `max_side` px a side, level-0 pixels per thumbnail pixel).

    Read from the smallest level still `max_side` px a side (else level 0), in chunks of
    THUMBNAIL_CHUNK² thumbnail pixels each shrunk by area averaging, so a slide without a small
    level (a plain tiled TIFF) never lies whole in memory.
    """
    large_enough = [level for level, size in enumerate(slide.level_dimensions) if max(size) >= max_side]
    level = max(large_enough, key=lambda level: slide.level_downsamples[level], default=0)
    width, height = slide.level_dimensions[level]
    factor = max(1.0, max(width, height) / max_side)
    out_w, out_h = max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor))
    picture = np.zeros((out_h, out_w, 3), np.uint8)
    for top in range(0, out_h, THUMBNAIL_CHUNK):
        for left in range(0, out_w, THUMBNAIL_CHUNK):
            bottom, right = min(top + THUMBNAIL_CHUNK, out_h), min(left + THUMBNAIL_CHUNK, out_w)
            x0, y0 = round(left * factor), round(top * factor)
            x1, y1 = min(width, round(right * factor)), min(height, round(bottom * factor))
            region = read_region(slide, level, x0, y0, max(1, x1 - x0), max(1, y1 - y0))
            picture[top:bottom, left:right] = cv2.resize(
                region, (right - left, bottom - top), interpolation=cv2.INTER_AREA
            )
    return picture, slide.level_downsamples[level] * width / out_w


def write_pyramidal_tiff(path: Path, image: np.ndarray, mpp: float | None, *, tile: int = 256) -> None:
    """Write an (H, W, 3) uint8 image as a tiled pyramidal TIFF (zlib, halving down to 512 px),
    recording `mpp` as its resolution where given: a slide as scanners lay one out, which tiffslide
    and QuPath open. How the tests and benchmarks make their slides; written atomically."""
    import tifffile

    from patchunet.core.files import atomic_file

    levels = [image]
    while max(levels[-1].shape[:2]) > 2 * THUMBNAIL_CHUNK:
        levels.append(cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    with atomic_file(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for index, level in enumerate(levels):
            scale = {} if mpp is None else {"resolution": (1e4 / (mpp * 2**index),) * 2, "resolutionunit": "CENTIMETER"}
            layout = {"subifds": len(levels) - 1} if index == 0 else {"subfiletype": 1}
            writer.write(level, **layout, **scale, **options)
