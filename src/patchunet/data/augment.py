"""The albumentations pipeline, shared by offline patch augmentation and online training.

Geometry and stain only: flips, rotate-90, a small affine, and H&E stain jitter (albumentations'
HEStain, or a scale and shift of each stain in HED space). Label maps are resampled with
nearest-neighbour interpolation, so a nucleus id is never blended into a new one.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from pydantic import NonNegativeFloat
from skimage.color import hed_from_rgb, rgb_from_hed

from patchunet.core.config import AugmentConfig

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
            stain_jitter(cfg),
        ],
        seed=seed,
    )


def stain_jitter(cfg: AugmentConfig) -> A.ImageOnlyTransform:
    """The pipeline's last step, in `cfg.stain_space`; a no-op (p=0) when `stain_jitter` is 0."""
    p = 1.0 if cfg.stain_jitter > 0 else 0.0
    if cfg.stain_space == "hed":
        return HEDJitter(sigma=cfg.stain_jitter, p=p)
    return A.HEStain(
        method="random_preset",
        intensity_scale_range=(1 - cfg.stain_jitter, 1 + cfg.stain_jitter),
        intensity_shift_range=(-cfg.stain_jitter, cfg.stain_jitter),
        p=p,
    )


class HEDJitter(A.ImageOnlyTransform):
    """Tellez et al. (2018) HED stain jitter: each of the haematoxylin, eosin and DAB optical
    densities x becomes alpha * x + beta, alpha drawn in [1 - sigma, 1 + sigma] and beta in
    [-sigma, sigma] per channel and per image (TIAToolbox's StainAugmentor applies the same rule
    to stain concentrations). Draws come from the Compose's seeded generator."""

    class InitSchema(BaseTransformInitSchema):
        sigma: NonNegativeFloat

    def __init__(self, sigma: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.sigma = sigma

    def get_params(self) -> dict[str, Any]:
        return {
            "alpha": self.random_generator.uniform(1 - self.sigma, 1 + self.sigma, 3),
            "beta": self.random_generator.uniform(-self.sigma, self.sigma, 3),
        }

    def apply(self, img: np.ndarray, alpha: np.ndarray, beta: np.ndarray, **params: Any) -> np.ndarray:
        return jitter_hed(img, alpha, beta)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


def jitter_hed(image: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB with each HED optical density x set to
    alpha * x + beta (alpha, beta: (3,) per H, E, D).

    The densities are -ln of the RGB fractions unmixed with scikit-image's HED matrix (Ruifrok and
    Johnston's), the scale Tellez et al. jitter on. Today's `rgb2hed` clips negative densities and
    rescales by ln(1e6), so its round trip is lossy and a shift would mean something else.

    The map is affine in RGB optical density, so it runs as one 3x3 product on float32 densities
    looked up per uint8 value: a few times cheaper than unmixing, which keeps the loader ahead of a
    bf16 training step.
    """
    mixing = (hed_from_rgb * alpha) @ rgb_from_hed  # density @ hed_from_rgb * alpha @ rgb_from_hed
    shift = beta @ rgb_from_hed
    density = RGB_DENSITY[image] @ mixing.astype(np.float32) + shift.astype(np.float32)
    rgb = np.exp(-density, out=density)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


RGB_DENSITY = -np.log(np.maximum(np.arange(256) / 255.0, 1e-6)).astype(np.float32)
"""-ln of each uint8 value's fraction of 255 (its optical density), floored as the unmixing floors it."""


def augment_pair(pipeline: A.Compose, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augment an (H, W, 3) uint8 image and its (H, W) labels together; labels keep their dtype.

    OpenCV cannot remap uint32, so labels travel as int32 (ids up to 2**31) and come back cast.
    """
    out = pipeline(image=image, mask=labels.astype(np.int32, copy=False))
    return out["image"], out["mask"].astype(labels.dtype, copy=False)
