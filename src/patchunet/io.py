"""Reading and validating MoNuSeg files, and writing outputs atomically.

Every reader raises `DataError` naming the file, so a bad file anywhere in the pipeline ends in
one clear line. Readers check the size an image declares in its header before decoding it, so a
small file declaring a huge image is refused at once. Writers go through a temporary path and a
rename, so a failure never leaves a half-written output behind; outputs get the permissions the
umask gives, as with any other tool.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from patchunet.errors import DataError

Polygon = np.ndarray
"""(K, 2) float64 vertices as (x, y), in the XML's 1-based pixel coordinates."""

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image any reader decodes: 100 megapixels (300 MB as RGB). MoNuSeg tiles are 1 MP and a
6000x6000 `patchunet predict` input is 36 MP, so this refuses only decompression bombs: a few MB of
PNG or TIFF declaring 30000x30000 would otherwise take gigabytes and seconds before failing."""

VERTEX_MARGIN_PX = 5.0
"""How far outside the image an XML vertex may lie. Annotators trace nuclei cut by the tile border
a little past the edge (real MoNuSeg XML reaches 3.9 px outside); anything farther is a typo or a
coordinate in another frame, and would silently grow or empty a nucleus."""

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


def read_label_image(path: Path, *, max_side: int | None = None) -> np.ndarray:
    """Read an instance label map (H, W) with 0 = background and one id per nucleus."""
    labels = _read_array(path, max_side)
    if labels.ndim != 2:
        raise DataError(path, f"label map of shape {labels.shape}; expected a single-channel (H, W) image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"{labels.dtype} label map; expected integer ids")
    return labels


def _read_array(path: Path, max_side: int | None) -> np.ndarray:
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


def read_polygons(path: Path, shape: tuple[int, int] | None = None) -> list[Polygon]:
    """Parse an Aperio/MoNuSeg XML into one polygon per <Region>, in file order.

    Order matters: where polygons overlap, the later one wins when rasterised. Every vertex must be
    a finite number and, given the image's `shape` (H, W), lie within VERTEX_MARGIN_PX of it.
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
        region_id = region.attrib.get("Id", "?")
        try:
            xy = [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
        except (KeyError, ValueError) as exc:
            raise DataError(path, f"malformed XML: Region {region_id} has a bad vertex ({exc})") from None
        vertices = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        _check_vertices(path, region_id, vertices, shape)
        polygons.append(vertices)
    return polygons


def _check_vertices(path: Path, region_id: str, vertices: Polygon, shape: tuple[int, int] | None) -> None:
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        number = int(np.argmin(finite))
        x, y = vertices[number]
        raise DataError(path, f"Region {region_id} vertex {number + 1} is not a finite number (X={x:g}, Y={y:g})")
    if shape is None or not len(vertices):
        return
    height, width = shape
    cols, rows = vertices[:, 0] - 1.0, vertices[:, 1] - 1.0  # the organisers' 1-based (X, Y) -> 0-based pixel
    beyond = np.max([-cols, cols - (width - 1), -rows, rows - (height - 1)], axis=0)  # px past the border
    number = int(np.argmax(beyond))
    if beyond[number] > VERTEX_MARGIN_PX:
        x, y = vertices[number]
        raise DataError(
            path,
            f"Region {region_id} vertex {number + 1} (X={x:g}, Y={y:g}) lies {beyond[number]:g} px outside the "
            f"{width}x{height} image (at most {VERTEX_MARGIN_PX:g} px allowed)",
        )


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


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as a CSV table with a header (`columns`, else the first row's keys), written atomically."""
    with atomic_file(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns or rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds.

    The old `path`, if any, stays untouched until the new one is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        if path.exists():
            old = path.with_name(f"{_temporary_prefix(path)}old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporary_prefix(path: Path) -> str:
    """`.<name>.<pid>.`: the writer's pid in the name tells a killed writer's leftovers from a live one's."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete the `.<name>.<pid>.<random>.tmp` files and folders that writers of `path` left when killed.

    Only those of a process that is gone: another process writing `path` right now keeps its own.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    for sibling in path.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match is None or _process_is_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def _process_is_alive(pid: int) -> bool:
    if pid in (0, os.getpid()):
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it in /proc/self/status."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and set it back
        umask = os.umask(0o022)
        os.umask(umask)
    return umask
