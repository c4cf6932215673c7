"""Tiling whole images into patches, and the on-disk patch set.

A patch set is one folder per split holding `images.npy` (N, S, S, 3) uint8, `labels.npy`
(N, S, S) instance ids, and `index.csv` saying where each patch came from. Plain .npy files
memory-map, so DataLoader workers share them without copying.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from patchunet.core.errors import ConfigError, DataError
from patchunet.core.files import write_csv
from patchunet.postprocess.tiling import tile_grid, tile_starts

INDEX_FIELDS = ("patch", "image_id", "copy", "y", "x")


def patch_count(shape: tuple[int, int], size: int, stride: int) -> int:
    """How many patches `tile_grid` cuts out of an image of `shape` (H, W)."""
    return len(tile_starts(shape[0], size, stride)) * len(tile_starts(shape[1], size, stride))


PATCH_PIXEL_BYTES = 3 + 2
"""Bytes per pixel of a saved patch: RGB uint8 and uint16 labels (uint32 only past 65,535 nuclei)."""


def check_room(count: int, size: int, copies: int, *, memory: int, disk: int) -> int:
    """The bytes of `count` patches of `size` px; ConfigError naming augment.copies (their usual
    cause) when `memory` bytes cannot hold them twice (`PatchSet.from_images` concatenates its
    lists) or `disk` bytes cannot hold them once."""
    needed = count * size**2 * PATCH_PIXEL_BYTES
    if 2 * needed > memory or needed > disk:
        room = "memory" if 2 * needed > memory else "disk"
        raise ConfigError(
            "augment.copies",
            f"{copies} copies of each train image make about {count} patches of {size} px, "
            f"{needed / 1e9:.1f} GB: more than the {room} free here holds; lower augment.copies or patch.size",
        )
    return needed


def extract_patches(array: np.ndarray, grid: list[tuple[int, int]], size: int) -> np.ndarray:
    """Cut (N, size, size, ...) patches out of an (H, W, ...) array at the `grid` corners."""
    return np.stack([array[y : y + size, x : x + size] for y, x in grid])


def copy_seed(seed: int, image_id: str, copy: int) -> int:
    """A seed for one augmented copy of one image, stable across runs, processes and order."""
    digest = hashlib.sha256(f"{seed}:{image_id}:{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclasses.dataclass
class PatchSet:
    """Patches of one split, with one index row per patch."""

    images: np.ndarray
    """(N, S, S, 3) uint8"""
    labels: np.ndarray
    """(N, S, S) uint16 or uint32 instance ids"""
    index: list[dict[str, int | str]]

    @classmethod
    def from_images(cls, copies: Iterable[tuple[str, int, np.ndarray, np.ndarray]], size: int, stride: int) -> PatchSet:
        """Cut each (image_id, copy, image, labels) into patches and concatenate everything."""
        images, labels, index = [], [], []
        for image_id, copy, image, label_map in copies:
            grid = [(tile.y, tile.x) for tile in tile_grid(label_map.shape, size, stride)]
            images.append(extract_patches(image, grid, size))
            labels.append(extract_patches(label_map, grid, size))
            index += [{"image_id": image_id, "copy": copy, "y": y, "x": x} for y, x in grid]
        for number, row in enumerate(index):
            row["patch"] = number
        if not index:
            return cls(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint16), [])
        return cls(np.concatenate(images), np.concatenate(labels), index)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", self.images)
        np.save(folder / "labels.npy", self.labels)
        write_csv(folder / "index.csv", self.index, INDEX_FIELDS)

    def joined(self, other: PatchSet) -> PatchSet:
        """This set's patches, then `other`'s (in memory), renumbered: a refit trains on both splits."""
        index = [{**row, "patch": number} for number, row in enumerate(self.index + other.index)]
        dtype = np.promote_types(self.labels.dtype, other.labels.dtype)  # uint32 ids stay whole
        labels = np.concatenate([self.labels.astype(dtype, copy=False), other.labels.astype(dtype, copy=False)])
        return PatchSet(np.concatenate([self.images, other.images]), labels, index)

    def whole_images(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{image_id: (image, labels)} put back together from the patches of copy 0.

        `tile_grid` covers every pixel of an image, so an unaugmented split (val) holds its images
        whole: the training loop scores them as whole images without reading the raw data again.
        """
        whole: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        size = self.images.shape[1]
        for row, image, labels in zip(self.index, self.images, self.labels, strict=True):
            if row["copy"] != 0:
                continue
            y, x = int(row["y"]), int(row["x"])
            if row["image_id"] not in whole:
                height, width = self._extent(str(row["image_id"]))
                whole[str(row["image_id"])] = (
                    np.zeros((height, width, 3), np.uint8),
                    np.zeros((height, width), self.labels.dtype),
                )
            canvas, label_canvas = whole[str(row["image_id"])]
            canvas[y : y + size, x : x + size] = image
            label_canvas[y : y + size, x : x + size] = labels
        return whole

    def _extent(self, image_id: str) -> tuple[int, int]:
        size = self.images.shape[1]
        rows = [r for r in self.index if r["image_id"] == image_id and r["copy"] == 0]
        return max(int(r["y"]) for r in rows) + size, max(int(r["x"]) for r in rows) + size

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> PatchSet:
        """Open a saved patch set; arrays are memory-mapped read-only unless `mmap` is False."""
        try:
            mode = "r" if mmap else None
            images = np.load(folder / "images.npy", mmap_mode=mode)
            labels = np.load(folder / "labels.npy", mmap_mode=mode)
            with (folder / "index.csv").open(newline="") as f:
                index = [{k: (v if k == "image_id" else int(v)) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, ValueError) as exc:
            raise DataError(folder, f"unreadable patch set ({exc}); rerun `dvc repro patches`") from None
        if not len(images) == len(labels) == len(index):
            raise DataError(
                folder,
                f"patch set is inconsistent: {len(images)} images, {len(labels)} labels, {len(index)} index rows",
            )
        return cls(images, labels, index)
