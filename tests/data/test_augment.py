import dataclasses

import albumentations as A
import cv2
import numpy as np
import pytest
from skimage.draw import disk

from patchunet.core.config import AugmentConfig
from patchunet.data.augment import WHITE, augment_pair, build_augmentation, jitter_hed, stain_jitter

CFG = AugmentConfig(
    copies=1, seed=0, rotate_limit=20, scale_limit=0.2, shift_limit=0.1, stain_jitter=0.1, stain_space="hestain"
)
HED = dataclasses.replace(CFG, stain_space="hed")
NO_GEOMETRY = {"rotate_limit": 0, "scale_limit": 0, "shift_limit": 0}


def nuclei_tile(dtype=np.uint16, first_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(100, 200, (128, 128, 3), dtype=np.uint8)
    labels = np.zeros((128, 128), dtype)
    for n, (r, c) in enumerate([(30, 30), (30, 90), (90, 30), (90, 90), (64, 64)]):
        labels[disk((r, c), 12, shape=labels.shape)] = first_id + n
    return image, labels


@pytest.mark.parametrize("seed", range(10))
def test_label_ids_are_never_blended(seed: int) -> None:
    image, labels = nuclei_tile()
    out_image, out_labels = augment_pair(build_augmentation(CFG, seed), image, labels)
    assert out_labels.dtype == np.uint16 and out_image.dtype == np.uint8
    assert out_image.shape == image.shape and out_labels.shape == labels.shape
    assert set(np.unique(out_labels)) <= set(np.unique(labels))


def test_ids_beyond_uint16_survive() -> None:
    image, labels = nuclei_tile(np.uint32, first_id=70_000)
    _, out_labels = augment_pair(build_augmentation(CFG, 3), image, labels)
    assert out_labels.dtype == np.uint32
    assert set(np.unique(out_labels)) - {0} <= set(range(70_000, 70_005))


def test_same_seed_gives_the_same_augmentation() -> None:
    image, labels = nuclei_tile()
    a = augment_pair(build_augmentation(CFG, 5), image, labels)
    b = augment_pair(build_augmentation(CFG, 5), image, labels)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_stain_jitter_changes_colour_but_not_geometry() -> None:
    cfg = dataclasses.replace(CFG, rotate_limit=0, scale_limit=0, shift_limit=0)
    image, labels = nuclei_tile()
    pipeline = build_augmentation(cfg, 1)
    changed = 0
    for _ in range(5):
        out_image, out_labels = augment_pair(pipeline, image, labels)
        # only flips and right-angle rotations remain: the nucleus areas are the same
        assert sorted(np.bincount(out_labels.ravel())) == sorted(np.bincount(labels.ravel()))
        changed += not np.array_equal(np.sort(out_image.ravel()), np.sort(image.ravel()))
    assert changed == 5


def hestain_pipeline_before_stain_spaces(cfg: AugmentConfig, seed: int) -> A.Compose:
    """The pipeline as it was before `stain_space` existed, written out."""
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
                p=1.0,
            ),
        ],
        seed=seed,
    )


@pytest.mark.parametrize("seed", range(3))
def test_hestain_space_draws_as_before(seed: int) -> None:
    image, labels = nuclei_tile()
    ours = augment_pair(build_augmentation(CFG, seed), image, labels)
    before = augment_pair(hestain_pipeline_before_stain_spaces(CFG, seed), image, labels)
    np.testing.assert_array_equal(ours[0], before[0])
    np.testing.assert_array_equal(ours[1], before[1])


def test_hed_jitter_is_the_same_for_the_same_seed() -> None:
    image, labels = nuclei_tile()
    a = augment_pair(build_augmentation(HED, 5), image, labels)
    b = augment_pair(build_augmentation(HED, 5), image, labels)
    c = augment_pair(build_augmentation(HED, 6), image, labels)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_hed_jitter_changes_colour_but_not_the_labels() -> None:
    image, labels = nuclei_tile()
    pipeline = build_augmentation(dataclasses.replace(HED, **NO_GEOMETRY), 1)
    for _ in range(5):
        out_image, out_labels = augment_pair(pipeline, image, labels)
        assert sorted(np.bincount(out_labels.ravel())) == sorted(np.bincount(labels.ravel()))
        assert not np.array_equal(np.sort(out_image.ravel()), np.sort(image.ravel()))


def test_hed_jitter_scales_and_shifts_the_stain_densities() -> None:
    image, _ = nuclei_tile()
    np.testing.assert_array_equal(jitter_hed(image, np.ones(3), np.zeros(3)), image)  # an exact round trip
    assert jitter_hed(image, np.full(3, 1.1), np.full(3, 0.05)).mean() < image.mean()  # more stain: darker
    assert jitter_hed(image, np.full(3, 0.9), np.full(3, -0.05)).mean() > image.mean()


@pytest.mark.parametrize("space", ["hestain", "hed"])
def test_no_stain_jitter_applies_no_stain_step(space: str) -> None:
    cfg = dataclasses.replace(CFG, stain_space=space)
    assert stain_jitter(dataclasses.replace(cfg, stain_jitter=0.0)).p == 0.0
    assert stain_jitter(cfg).p == 1.0
