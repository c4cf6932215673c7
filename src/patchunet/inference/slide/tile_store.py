"""The finished tiles of one slide on disk, so an interrupted slide resumes after its last one.

A folder holds plan.json, what produced the tiles (model, settings, slide), and one
`<row>_<col>.json` per finished tile, each written atomically: {"features": [...], "report": {...}}.
Another plan starts the folder over; a damaged tile file is dropped and its tile redone. Keys are
a tile's (row, col) in the slide's tile grid, so any process that opens the folder with the same
plan sees the same finished tiles.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchunet.core.files import atomic_file, write_json

if TYPE_CHECKING:
    from patchunet.postprocess.tiling import Tile

PLAN_FILE = "plan.json"
TILE_FILES = "[0-9]*_[0-9]*.json"
TILE_KEYS = {"features", "report"}
"""What a finished tile's file holds: its kept nuclei as GeoJSON features, and its stitch report."""


class TileStore:
    """Finished tiles of one slide in `folder`, under the `plan` that produced them. Keeps in
    memory the tiles of the rows a later tile may still need as earlier neighbours."""

    def __init__(self, folder: Path, plan: dict) -> None:
        self.folder = folder
        self.loaded: dict[tuple[int, int], dict] = {}
        plan_path = folder / PLAN_FILE
        if folder.is_dir() and _read_json(plan_path) != json.loads(json.dumps(plan)):
            print(f"{folder}: made with other settings, model or slide; starting the slide over", file=sys.stderr)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not plan_path.is_file():
            write_json(plan_path, plan)
        for path in sorted(folder.glob(TILE_FILES)):
            if not isinstance(_read_tile(path), dict):
                print(f"{path}: damaged (not a finished tile's JSON); the tile is redone", file=sys.stderr)
                path.unlink()

    def path(self, row: int, col: int) -> Path:
        return self.folder / f"{row:04d}_{col:04d}.json"

    def has(self, row: int, col: int) -> bool:
        return row >= 0 and col >= 0 and self.path(row, col).is_file()

    def count(self, tiles: Iterable[Tile]) -> int:
        """How many of `tiles` are finished."""
        return sum(self.has(tile.row, tile.col) for tile in tiles)

    def save(self, row: int, col: int, done: dict) -> None:
        """Record a finished tile, atomically: a kill leaves it whole or absent."""
        with atomic_file(self.path(row, col)) as tmp:
            tmp.write_text(json.dumps(done, separators=(",", ":")))
        self.loaded[(row, col)] = done

    def load(self, row: int, col: int) -> dict:
        if (row, col) not in self.loaded:
            self.loaded[(row, col)] = json.loads(self.path(row, col).read_text())
        return self.loaded[(row, col)]

    def earlier_neighbours(self, tile: Tile) -> list[dict]:
        """Finished tiles adjacent to `tile` and before it in raster order (the row above, and the
        left one): the same set whether the run was interrupted or not, so a resumed slide gives
        the same nuclei. Tiles without tissue were never segmented and have no file."""
        above = [(tile.row - 1, tile.col + step) for step in (-1, 0, 1)]
        return [self.load(*key) for key in (*above, (tile.row, tile.col - 1)) if self.has(*key)]

    def finished(self, tiles: Iterable[Tile]) -> Iterator[dict]:
        """Each of `tiles` (all finished, in raster order) as saved, holding at most two rows in memory."""
        for tile in tiles:
            yield self.load(tile.row, tile.col)
            self.forget_rows_before(tile.row)

    def forget_rows_before(self, row: int) -> None:
        self.loaded = {key: done for key, done in self.loaded.items() if key[0] >= row}

    def remove(self) -> None:
        shutil.rmtree(self.folder)


def _read_tile(path: Path) -> dict | None:
    """A finished tile's file, or None where it is not one (truncated, damaged, another's)."""
    done = _read_json(path)
    return done if isinstance(done, dict) and done.keys() >= TILE_KEYS else None


def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None
