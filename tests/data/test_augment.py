import dataclasses

import numpy as np
import pytest
from skimage.draw import disk

from patchunet.config import AugmentConfig
from patchunet.data.augment import augment_pair, build_augmentation

CFG = AugmentConfig(copies=1, seed=0, rotate_limit=20, scale_limit=0.2, shift_limit=0.1, stain_jitter=0.1)


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
