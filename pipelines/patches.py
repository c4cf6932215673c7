"""DVC stage `patches`: train/val patch sets in data/processed/patches/{train,val}.

Patches of patch.size every patch.stride cover each whole image, borders included. Training
images also give augment.copies augmented copies each, tiled the same way; val images are never
augmented, and no image is on both sides because the split is by image.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import tifffile
from tqdm import tqdm

from patchunet.core.config import AugmentConfig, PatchConfig, load_params, parse_section
from patchunet.core.console import run_stage
from patchunet.core.errors import DataError
from patchunet.core.files import atomic_directory, write_json
from patchunet.core.paths import PATCH_DIR, PATCH_SUMMARY, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.core.resources import available_memory, free_disk
from patchunet.data.image_copies import LabelledCopy, labelled_copies
from patchunet.data.monuseg import raw_dirs
from patchunet.data.patches import PatchSet, check_room, patch_count
from patchunet.data.split import read_split

RAW_IMAGES = raw_dirs(RAW_DIR).images["train"]
LABELS = labels_dir("train")


def labelled_images(
    image_ids: list[str], size: int, augment: AugmentConfig | None, desc: str
) -> Iterator[LabelledCopy]:
    return labelled_copies(image_ids, RAW_IMAGES, LABELS, size, augment, lambda ids: tqdm(ids, desc=desc, unit="image"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    patch = parse_section(PatchConfig, params, "patch")
    augment = parse_section(AugmentConfig, params, "augment")
    split = read_split(SPLIT_FILE)
    announce_size(split, patch, augment)

    with atomic_directory(PATCH_DIR) as staging:
        train = PatchSet.from_images(
            labelled_images(split["train"], patch.size, augment, "train"), patch.size, patch.stride
        )
        train.save(staging / "train")
        val = PatchSet.from_images(labelled_images(split["val"], patch.size, None, "val"), patch.size, patch.stride)
        val.save(staging / "val")

    augmented = sum(row["copy"] > 0 for row in train.index)
    summary = {
        "original_patches": len(train.index) - augmented + len(val.index),
        "augmented_patches": augmented,
        "total_patches": len(train.index) + len(val.index),
        "train_patches": len(train.index),
        "val_patches": len(val.index),
        "train_images": len(split["train"]),
        "val_images": len(split["val"]),
    }
    write_json(PATCH_SUMMARY, summary)
    print(f"patches: {patch.size}x{patch.stride} (size x stride), {augment.copies} augmented copies per train image")
    print("patches: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
    print(f"patches: wrote {PATCH_DIR}/{{train,val}} and {PATCH_SUMMARY}")


def announce_size(split: dict[str, list[str]], patch: PatchConfig, augment: AugmentConfig) -> None:
    """Refuse a patch set the free memory or disk cannot hold, or say in one line how much it holds."""
    shapes = {image_id: label_shape(image_id) for image_id in split["train"] + split["val"]}
    count = sum(
        patch_count(shapes[image_id], patch.size, patch.stride) * (copies + 1)
        for image_ids, copies in ((split["train"], augment.copies), (split["val"], 0))
        for image_id in image_ids
        if patch.size <= min(shapes[image_id])  # a smaller image is refused, by name, as it is read
    )
    memory, disk = available_memory(), free_disk(PATCH_DIR)
    needed = check_room(count, patch.size, augment.copies, memory=memory, disk=disk)
    print(
        f"patches: about {count} patches, {needed / 1e9:.2f} GB "
        f"({memory / 1e9:.1f} GB of memory available, {disk / 1e9:.1f} GB of disk free)"
    )


def label_shape(image_id: str) -> tuple[int, int]:
    """(H, W) of an image's label map, from its TIFF header."""
    path = LABELS / f"{image_id}.tif"
    try:
        with tifffile.TiffFile(path) as tiff:
            return tiff.pages[0].shape[:2]
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DataError(path, f"unreadable label map ({exc}); rerun `dvc repro masks`") from None


if __name__ == "__main__":
    run_stage(main)
