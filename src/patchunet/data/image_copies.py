"""The images a patch set is cut from: each split image with its labels, then its augmented copies.

Shared by the `patches` stage and the tuning trials, which cut the same images at other sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from patchunet.core.config import AugmentConfig
from patchunet.core.errors import ConfigError, DataError
from patchunet.data.augment import augment_pair, build_augmentation
from patchunet.data.patches import copy_seed
from patchunet.io.images import read_label_image, read_rgb_image

LabelledCopy = tuple[str, int, np.ndarray, np.ndarray]
"""(image_id, copy, image (H, W, 3) uint8, labels (H, W)); copy 0 is the original image."""


def labelled_copies(
    image_ids: list[str],
    images_dir: Path,
    labels_dir: Path,
    patch_size: int,
    augment: AugmentConfig | None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> Iterator[LabelledCopy]:
    """Each image with its labels, then its augmented copies (copy 1..n) when `augment` is given."""
    pipeline = build_augmentation(augment) if augment and augment.copies else None
    for image_id in progress(image_ids) if progress else image_ids:
        image_path = images_dir / f"{image_id}.tif"
        image = read_rgb_image(image_path)
        labels = read_label_image(labels_dir / f"{image_id}.tif")
        if labels.shape != image.shape[:2]:
            raise DataError(
                labels_dir / f"{image_id}.tif", f"label map {labels.shape} does not match image {image.shape[:2]}"
            )
        if patch_size > min(labels.shape):
            raise ConfigError(
                "patch.size", f"{patch_size} is larger than {image_path} ({labels.shape[1]}x{labels.shape[0]})"
            )
        yield image_id, 0, image, labels
        for copy in range(1, augment.copies + 1 if pipeline else 1):
            pipeline.set_random_seed(copy_seed(augment.seed, image_id, copy))
            yield image_id, copy, *augment_pair(pipeline, image, labels)
