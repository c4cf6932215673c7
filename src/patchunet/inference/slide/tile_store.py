"""The finished tiles of one slide on disk, so an interrupted slide resumes after its last one.

A folder holds plan.json, what produced the tiles (model, settings, slide), and two files per
finished tile, each written atomically: `<row>_<col>.labels.npz`, its kept nuclei as labels (for
stitching its later neighbours and for the label image, `TileLabels`; Zstandard-compressed, which
writes 8x and reads 2.5x faster than the npz's zlib for the same size), then `<row>_<col>.json`,
{"features": [...], "report": {...}}. A tile is finished once both are there and whole: a kill
between the two writes, or a damaged file, has the tile redone. Another plan starts the folder
over. Keys are a tile's (row, col) in the slide's tile grid, so any process that opens the folder
with the same plan sees the same finished tiles.

With a mirror (`predict-slide --out URL`), the folder is a local working copy of the store on object
storage: opening it downloads the finished tiles there, each file saved is uploaded (the labels
before the JSON, so a tile counts as finished there too only once whole), and removing it removes
both. A worker on another machine resumes from the mirror.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imagecodecs
import numpy as np

from patchunet.core.errors import DataError
from patchunet.core.files import atomic_file, write_json

if TYPE_CHECKING:
    from patchunet.io.remote_folder import RemoteFolder
    from patchunet.postprocess.tiling import Tile

PLAN_FILE = "plan.json"
TILE_FILES = "[0-9]*_[0-9]*.json"
TILE_KEYS = {"features", "report"}
"""What a finished tile's file holds: its kept nuclei as GeoJSON features, and its stitch report."""
LABELS_FILE_SUFFIX = ".labels.npz"
LABELS_KEYS = {"zstd", "shape", "itemsize", "origin", "count"}
LABELS_FORMAT = "zstd"
"""In the plan: stores of an older labels file format start over."""


@dataclasses.dataclass(frozen=True)
class TileLabels:
    """A finished tile's kept nuclei as (h, w) uint16 labels (uint32 past 65,535 nuclei) whose
    pixel (0, 0) is the level read's pixel (y, x): local ids 1..count, id i being its features[i - 1],
    0 elsewhere. Cropped to its nuclei's box, so a tile without nuclei is (0, 0)."""

    x: int
    y: int
    labels: np.ndarray
    count: int

    @classmethod
    def cropped(cls, labels: np.ndarray, offset: tuple[int, int]) -> TileLabels:
        """From (H, W) labels 1..N (N = their max, every id present) read at `offset` (x, y)."""
        rows, cols = np.flatnonzero(labels.any(axis=1)), np.flatnonzero(labels.any(axis=0))
        count = int(labels.max(initial=0))
        if not count:
            return cls(offset[0], offset[1], np.zeros((0, 0), np.uint16), 0)
        box = labels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32
        return cls(offset[0] + int(cols[0]), offset[1] + int(rows[0]), box.astype(dtype), count)

    @property
    def bottom(self) -> int:
        """The level read's row just below it."""
        return self.y + self.labels.shape[0]


class TileStore:
    """Finished tiles of one slide in `folder`, under the `plan` that produced them. Holds none in
    memory: a tile's earlier neighbours are read back as it is stitched."""

    def __init__(self, folder: Path, plan: dict, mirror: RemoteFolder | None = None) -> None:
        self.folder = folder
        self.mirror = mirror
        # a store of other files, or of another labels format, starts over
        plan = {**plan, "tile_files": [".json", LABELS_FILE_SUFFIX, LABELS_FORMAT]}
        plan_path = folder / PLAN_FILE
        same_plan = json.loads(json.dumps(plan))  # as it reads back
        # the plan first from a mirror: another plan's tiles are not worth fetching
        if mirror is not None and mirror.download(PLAN_FILE, plan_path) and _read_json(plan_path) == same_plan:
            mirror.download_all(folder, skip=(PLAN_FILE,))
        if folder.is_dir() and _read_json(plan_path) != same_plan:
            where = mirror or folder
            print(f"{where}: made with other settings, model or slide; starting the slide over", file=sys.stderr)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not plan_path.is_file():
            write_json(plan_path, plan)
        for path in sorted(folder.glob(TILE_FILES)):
            done = _read_tile(path)
            labels = _read_labels(path.with_name(path.stem + LABELS_FILE_SUFFIX))
            if done is None:
                print(f"{path}: damaged (not a finished tile's JSON); the tile is redone", file=sys.stderr)
                path.unlink()
            elif labels is None or labels.count != len(done["features"]):
                print(f"{path}: its labels are missing or damaged; the tile is redone", file=sys.stderr)
                path.unlink()
        if mirror is not None:  # the mirror holds what the folder holds: another plan's or damaged tiles go
            kept = {path.name for path in folder.iterdir()}
            mirror.remove([name for name in mirror.names() if name not in kept])
            mirror.upload(plan_path)

    def path(self, row: int, col: int) -> Path:
        return self.folder / f"{row:04d}_{col:04d}.json"

    def labels_path(self, row: int, col: int) -> Path:
        return self.folder / f"{row:04d}_{col:04d}{LABELS_FILE_SUFFIX}"

    def has(self, row: int, col: int) -> bool:
        return row >= 0 and col >= 0 and self.path(row, col).is_file() and self.labels_path(row, col).is_file()

    def count(self, tiles: Iterable[Tile]) -> int:
        """How many of `tiles` are finished."""
        return sum(self.has(tile.row, tile.col) for tile in tiles)

    def save(self, row: int, col: int, done: dict) -> None:
        """Record a finished tile, `done` being `stitched_tile`'s: its labels (`TileLabels`, under
        "labels"), then the rest as JSON, each atomically: a kill leaves the tile whole or unfinished."""
        done = dict(done)
        labels: TileLabels = done.pop("labels")
        pixels = np.ascontiguousarray(labels.labels)
        with atomic_file(self.labels_path(row, col)) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                zstd=np.frombuffer(imagecodecs.zstd_encode(pixels, level=1), np.uint8),
                shape=np.array(pixels.shape),
                itemsize=pixels.itemsize,
                origin=np.array([labels.x, labels.y]),
                count=labels.count,
            )
        with atomic_file(self.path(row, col)) as tmp:
            tmp.write_text(json.dumps(done, separators=(",", ":")))
        if self.mirror is not None:
            self.mirror.upload(self.labels_path(row, col))
            self.mirror.upload(self.path(row, col))

    def load(self, row: int, col: int) -> dict:
        return json.loads(self.path(row, col).read_text())

    def labels(self, row: int, col: int) -> TileLabels:
        """A finished tile's labels, read from its file on each call (the store keeps none)."""
        labels = _read_labels(self.labels_path(row, col))
        if labels is None:
            raise DataError(self.labels_path(row, col), "damaged while the slide's outputs were written")
        return labels

    def nucleus_counts(self, tiles: Iterable[Tile]) -> list[int]:
        """How many nuclei each of `tiles` (all finished) kept, without reading their labels or features."""
        counts = []
        for tile in tiles:
            with np.load(self.labels_path(tile.row, tile.col)) as saved:
                counts.append(int(saved["count"]))
        return counts

    def earlier_neighbours(self, tile: Tile) -> list[TileLabels]:
        """The labels of the finished tiles adjacent to `tile` and before it in raster order (the
        row above, and the left one): the same set whether the run was interrupted or not, so a
        resumed slide gives the same nuclei. Tiles without tissue were never segmented and have no file."""
        above = [(tile.row - 1, tile.col + step) for step in (-1, 0, 1)]
        return [self.labels(*key) for key in (*above, (tile.row, tile.col - 1)) if self.has(*key)]

    def finished(self, tiles: Iterable[Tile]) -> Iterator[dict]:
        """Each of `tiles` (all finished, in raster order) as saved, one in memory at a time."""
        for tile in tiles:
            yield self.load(tile.row, tile.col)

    def remove(self) -> None:
        if self.mirror is not None:
            self.mirror.remove_all()
        shutil.rmtree(self.folder)


def _read_tile(path: Path) -> dict | None:
    """A finished tile's file, or None where it is not one (truncated, damaged, another's)."""
    done = _read_json(path)
    return done if isinstance(done, dict) and done.keys() >= TILE_KEYS else None


def _read_labels(path: Path) -> TileLabels | None:
    """A finished tile's labels, or None where the file is missing or is not one (truncated, damaged)."""
    damaged = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, imagecodecs.ZstdError)
    with contextlib.suppress(*damaged), np.load(path) as saved:
        if saved.files and set(saved.files) == LABELS_KEYS:
            dtype = {2: np.uint16, 4: np.uint32}[int(saved["itemsize"])]
            shape = tuple(int(side) for side in saved["shape"])
            labels = np.frombuffer(imagecodecs.zstd_decode(saved["zstd"].tobytes()), dtype).reshape(shape)
            x, y = (int(value) for value in saved["origin"])
            return TileLabels(x, y, labels, int(saved["count"]))
    return None


def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None
