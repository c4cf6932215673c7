"""Reading and validating MoNuSeg files, and writing outputs atomically.

Every reader raises `DataError` naming the file, so a bad file anywhere in the pipeline ends in
one clear line. Writers go through a temporary path and a rename, so a failure never leaves a
half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from patchunet.errors import DataError

Polygon = np.ndarray
"""(K, 2) float64 vertices as (x, y), in the XML's 1-based pixel coordinates."""


def read_rgb_image(path: Path) -> np.ndarray:
    """Read an H&E image as (H, W, 3) uint8, refusing what the model cannot take.

    TIFFs go through tifffile (LZW and PackBits need imagecodecs); PNGs through imagecodecs.
    """
    image = _read_array(path)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise DataError(path, f"grayscale image {image.shape}; expected RGB (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else image.ndim
        kind = "RGBA" if image.ndim == 3 and image.shape[2] == 4 else f"{channels}-channel"
        raise DataError(path, f"{kind} image of shape {image.shape}; expected RGB (H, W, 3)")
    if image.dtype != np.uint8:
        raise DataError(path, f"{image.dtype} pixels; expected 8-bit (uint8) RGB")
    return image


def read_label_image(path: Path) -> np.ndarray:
    """Read an instance label map (H, W) with 0 = background and one id per nucleus."""
    labels = _read_array(path)
    if labels.ndim != 2:
        raise DataError(path, f"label map of shape {labels.shape}; expected a single-channel (H, W) image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"{labels.dtype} label map; expected integer ids")
    return labels


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "file not found")
    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)  # a broken file gets our one line, not tifffile's warnings too
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = tifffile.imread(path)
        else:
            import imagecodecs

            array = imagecodecs.imread(path)
    except Exception as exc:  # tifffile and imagecodecs raise many types for a broken file
        raise DataError(path, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    finally:
        tifffile_log.setLevel(level)
    if array.size == 0:  # tifffile returns an empty array for a file whose first page is unreadable
        raise DataError(path, "corrupt or truncated image (no readable pixels)")
    return array


def read_polygons(path: Path) -> list[Polygon]:
    """Parse an Aperio/MoNuSeg XML into one polygon per <Region>, in file order.

    Order matters: where polygons overlap, the later one wins when rasterised.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except ET.ParseError as exc:
        raise DataError(path, f"malformed XML ({exc})") from None
    regions = root.findall(".//Region")
    if not regions:
        raise DataError(path, "XML holds no <Region> polygons")
    polygons = []
    for region in regions:
        try:
            xy = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
        except (KeyError, ValueError) as exc:
            region_id = region.attrib.get("Id", "?")
            raise DataError(path, f"malformed XML: Region {region_id} has a bad vertex ({exc})") from None
        polygons.append(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    return polygons


def read_json_value(path: Path, *keys: str) -> Any:
    """The value at `keys` in a JSON file another stage wrote, or one line saying what is wrong."""
    if not path.is_file():
        raise DataError(path, "file not found: run the stage that writes it first (dvc repro)")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise DataError(path, f"has no '{'.'.join(keys[: depth + 1])}'")
        value = value[key]
    return value


def write_json(path: Path, content: object) -> None:
    """Write `content` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def write_label_tiff(path: Path, labels: np.ndarray) -> None:
    """Write (H, W) labels as a zlib-compressed TIFF, atomically."""
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, labels, compression="zlib")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    import imagecodecs

    with atomic_file(path) as tmp:
        tmp.write_bytes(imagecodecs.png_encode(image))


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds.

    The old `path`, if any, stays untouched until the new one is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
