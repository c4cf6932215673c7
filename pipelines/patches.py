"""DVC stage `patches`: train/val patch stores in data/processed/patches/{train,val}.

Patches of patch.size every patch.stride cover each whole image, borders included. Training
images also give augment.copies augmented copies each, tiled the same way; val images are never
augmented, and no image is on both sides because the split is by image.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from patchunet.augment import augment_pair, build_augmentation
from patchunet.cli import run_stage
from patchunet.config import AugmentConfig, PatchConfig, load_params, parse_section
from patchunet.errors import ConfigError, DataError
from patchunet.io import atomic_directory, read_label_image, read_rgb_image, write_json
from patchunet.layout import PATCH_DIR, PATCH_SUMMARY, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.monuseg import raw_dirs
from patchunet.patches import PatchSet, copy_seed

RAW_IMAGES = raw_dirs(RAW_DIR).images["train"]
LABELS = labels_dir("train")

Tile = tuple[str, int, np.ndarray, np.ndarray]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    patch = parse_section(PatchConfig, params, "patch")
    augment = parse_section(AugmentConfig, params, "augment")
    split = read_split(SPLIT_FILE)

    with atomic_directory(PATCH_DIR) as staging:
        train = PatchSet.from_tiles(tiles(split["train"], patch, augment), patch.size, patch.stride)
        train.save(staging / "train")
        val = PatchSet.from_tiles(tiles(split["val"], patch, None), patch.size, patch.stride)
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


def read_split(path: Path) -> dict[str, list[str]]:
    try:
        split = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read the split ({exc}); run `dvc repro split`") from None
    overlap = set(split["train"]) & set(split["val"])
    if overlap:
        raise DataError(path, f"train and val share images: {sorted(overlap)}")
    return split


def tiles(image_ids: list[str], patch: PatchConfig, augment: AugmentConfig | None) -> Iterator[Tile]:
    """Each image with its labels, then its augmented copies (copy 1..n) when `augment` is given."""
    pipeline = build_augmentation(augment) if augment and augment.copies else None
    for image_id in tqdm(image_ids, desc="train" if augment else "val", unit="image"):
        image_path = RAW_IMAGES / f"{image_id}.tif"
        image = read_rgb_image(image_path)
        labels = read_label_image(LABELS / f"{image_id}.tif")
        if labels.shape != image.shape[:2]:
            raise DataError(
                LABELS / f"{image_id}.tif", f"label map {labels.shape} does not match image {image.shape[:2]}"
            )
        if patch.size > min(labels.shape):
            raise ConfigError(
                "patch.size", f"{patch.size} is larger than {image_path} ({labels.shape[1]}x{labels.shape[0]})"
            )
        yield image_id, 0, image, labels
        for copy in range(1, augment.copies + 1 if pipeline else 1):
            pipeline.set_random_seed(copy_seed(augment.seed, image_id, copy))
            yield image_id, copy, *augment_pair(pipeline, image, labels)


if __name__ == "__main__":
    run_stage(main)
