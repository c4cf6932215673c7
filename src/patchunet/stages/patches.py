"""Stage `patches`: train/val patch sets in data/processed/patches/{train,val}.

Patches of patch.size every patch.stride cover each whole image, borders included. Training
images also give augment.copies augmented copies each, tiled the same way; val images are never
augmented, and no image is on both sides because the split is by image. Writes the counts to
metrics/patches.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import tifffile
from tqdm import tqdm

from patchunet.core.config import AugmentConfig, PatchConfig, parse_section
from patchunet.core.errors import DataError
from patchunet.core.files import atomic_directory, write_json
from patchunet.core.paths import PATCH_DIR, PATCH_SUMMARY, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.core.resources import available_memory, free_disk
from patchunet.data.image_copies import LabelledCopy, labelled_copies
from patchunet.data.monuseg import raw_dirs
from patchunet.data.patches import PatchSet, check_room, patch_count
from patchunet.data.split import read_split


@dataclasses.dataclass(frozen=True)
class PatchesSummary:
    patch_dir: Path
    counts: dict[str, int]
    """What metrics/patches.json holds: original, augmented, train and val patches and images."""


def run(params: dict, root: Path) -> PatchesSummary:
    """Cut the split's train and val images into patch sets, after checking they fit."""
    patch = parse_section(PatchConfig, params, "patch")
    augment = parse_section(AugmentConfig, params, "augment")
    split = read_split(root / SPLIT_FILE)
    announce_size(root, split, patch, augment)

    with atomic_directory(root / PATCH_DIR) as staging:
        images = labelled_images(root, split["train"], patch.size, augment, "train")
        train = PatchSet.from_images(images, patch.size, patch.stride)
        train.save(staging / "train")
        images = labelled_images(root, split["val"], patch.size, None, "val")
        val = PatchSet.from_images(images, patch.size, patch.stride)
        val.save(staging / "val")

    augmented = sum(row["copy"] > 0 for row in train.index)
    counts = {
        "original_patches": len(train.index) - augmented + len(val.index),
        "augmented_patches": augmented,
        "total_patches": len(train.index) + len(val.index),
        "train_patches": len(train.index),
        "val_patches": len(val.index),
        "train_images": len(split["train"]),
        "val_images": len(split["val"]),
    }
    write_json(root / PATCH_SUMMARY, counts)
    print(f"patches: {patch.size}x{patch.stride} (size x stride), {augment.copies} augmented copies per train image")
    print("patches: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    print(f"patches: wrote {root / PATCH_DIR}/{{train,val}} and {root / PATCH_SUMMARY}")
    return PatchesSummary(root / PATCH_DIR, counts)


def labelled_images(
    root: Path, image_ids: list[str], size: int, augment: AugmentConfig | None, desc: str
) -> Iterator[LabelledCopy]:
    """The training images `image_ids` and their labels, with `augment`'s copies, one bar per side."""
    images, labels = raw_dirs(root / RAW_DIR).images["train"], root / labels_dir("train")
    return labelled_copies(image_ids, images, labels, size, augment, lambda ids: tqdm(ids, desc=desc, unit="image"))


def announce_size(root: Path, split: dict[str, list[str]], patch: PatchConfig, augment: AugmentConfig) -> None:
    """Refuse a patch set the free memory or disk cannot hold, or say in one line how much it holds."""
    labels = root / labels_dir("train")
    shapes = {image_id: label_shape(labels / f"{image_id}.tif") for image_id in split["train"] + split["val"]}
    count = sum(
        patch_count(shapes[image_id], patch.size, patch.stride) * (copies + 1)
        for image_ids, copies in ((split["train"], augment.copies), (split["val"], 0))
        for image_id in image_ids
        if patch.size <= min(shapes[image_id])  # a smaller image is refused, by name, as it is read
    )
    memory, disk = available_memory(), free_disk(root / PATCH_DIR)
    needed = check_room(count, patch.size, augment.copies, memory=memory, disk=disk)
    print(
        f"patches: about {count} patches, {needed / 1e9:.2f} GB "
        f"({memory / 1e9:.1f} GB of memory available, {disk / 1e9:.1f} GB of disk free)"
    )


def label_shape(path: Path) -> tuple[int, int]:
    """(H, W) of a label map, from its TIFF header."""
    try:
        with tifffile.TiffFile(path) as tiff:
            return tiff.pages[0].shape[:2]
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DataError(path, f"unreadable label map ({exc}); rerun `dvc repro masks`") from None
