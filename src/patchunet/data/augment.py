"""The albumentations pipeline, shared by offline patch augmentation and online training.

Geometry and stain only: flips, rotate-90, a small affine, and H&E stain jitter. Label maps are
resampled with nearest-neighbour interpolation, so a nucleus id is never blended into a new one.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from patchunet.config import AugmentConfig

WHITE = (255, 255, 255)
"""Fill for pixels an affine brings in from outside the image: empty glass, with no nuclei."""


def build_augmentation(cfg: AugmentConfig, seed: int | None = None) -> A.Compose:
    """Return a seeded albumentations pipeline taking `image=` (H, W, 3) uint8 and `mask=` labels."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=1.0),
            A.Affine(
                rotate=(-cfg.rotate_limit, cfg.rotate_limit),
                scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit),
                translate_percent=(-cfg.shift_limit, cfg.shift_limit),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=WHITE,
                fill_mask=0,
                p=1.0,
            ),
            A.HEStain(
                method="random_preset",
                intensity_scale_range=(1 - cfg.stain_jitter, 1 + cfg.stain_jitter),
                intensity_shift_range=(-cfg.stain_jitter, cfg.stain_jitter),
                p=1.0 if cfg.stain_jitter > 0 else 0.0,
            ),
        ],
        seed=seed,
    )


def augment_pair(pipeline: A.Compose, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augment an (H, W, 3) uint8 image and its (H, W) labels together; labels keep their dtype.

    OpenCV cannot remap uint32, so labels travel as int32 (ids up to 2**31) and come back cast.
    """
    out = pipeline(image=image, mask=labels.astype(np.int32, copy=False))
    return out["image"], out["mask"].astype(labels.dtype, copy=False)
