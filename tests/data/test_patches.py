from pathlib import Path

import numpy as np
import pytest

from patchunet.core.errors import ConfigError, DataError
from patchunet.data.patches import (
    PatchSet,
    check_room,
    copy_seed,
    extract_patches,
    patch_count,
)
from patchunet.postprocess.tiling import tile_grid


def test_extracted_patches_are_the_image_at_their_corners() -> None:
    image = np.arange(30 * 40 * 3).reshape(30, 40, 3)
    grid = [(tile.y, tile.x) for tile in tile_grid((30, 40), 16, 16)]
    patches = extract_patches(image, grid, 16)
    assert patches.shape == (len(grid), 16, 16, 3)
    for patch, (y, x) in zip(patches, grid, strict=True):
        np.testing.assert_array_equal(patch, image[y : y + 16, x : x + 16])


def test_copy_seed_is_stable_and_distinct() -> None:
    assert copy_seed(7, "a", 1) == copy_seed(7, "a", 1)
    assert len({copy_seed(7, "a", 1), copy_seed(7, "a", 2), copy_seed(7, "b", 1), copy_seed(8, "a", 1)}) == 4


def test_patch_set_round_trips_through_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    labels = rng.integers(0, 9, (50, 60)).astype(np.uint16)
    patches = PatchSet.from_images([("img", 0, image, labels), ("img", 1, image, labels)], 32, 32)
    patches.save(tmp_path / "train")
    loaded = PatchSet.load(tmp_path / "train")
    np.testing.assert_array_equal(loaded.images, patches.images)
    np.testing.assert_array_equal(loaded.labels, patches.labels)
    assert loaded.index == patches.index
    assert [r["copy"] for r in loaded.index] == [0] * 4 + [1] * 4
    assert [r["patch"] for r in loaded.index] == list(range(8))


def test_missing_patch_store_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dvc repro patches"):
        PatchSet.load(tmp_path / "nothing")


def test_a_patch_set_the_memory_or_disk_cannot_hold_is_refused_naming_augment_copies() -> None:
    """augment.copies 1000000000 ran `patches` until it was killed."""
    gb = 10**9
    assert check_room(1000, 256, 1, memory=gb, disk=gb) == 1000 * 256**2 * 5
    with pytest.raises(ConfigError, match=r"^params\.yaml augment\.copies: 100 copies .* more than the memory free"):
        check_room(3000, 256, 100, memory=gb, disk=100 * gb)  # ~1 GB, held twice while cut
    with pytest.raises(ConfigError, match=r"more than the disk free here holds; lower augment\.copies or patch\.size$"):
        check_room(3000, 256, 100, memory=100 * gb, disk=gb // 2)


def test_patch_count_is_what_the_tile_grid_cuts() -> None:
    for shape in [(100, 100), (1000, 1000), (37, 300)]:
        assert patch_count(shape, 32, 24) == len(tile_grid(shape, 32, 24))


@pytest.mark.parametrize("stride", [32, 20])  # tiles that abut, and tiles that overlap
def test_whole_images_puts_each_image_back_together_from_its_patches(tmp_path: Path, stride: int) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    labels = rng.integers(0, 300, (70, 90)).astype(np.uint16)
    other = rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    other_labels = rng.integers(0, 9, (40, 33)).astype(np.uint16)
    patches = PatchSet.from_images([("img", 0, image, labels), ("other", 0, other, other_labels)], 32, stride)
    patches.save(tmp_path / "val")
    for patch_set in (patches, PatchSet.load(tmp_path / "val")):
        whole = patch_set.whole_images()
        assert sorted(whole) == ["img", "other"]
        for image_id, (expected, expected_labels) in {"img": (image, labels), "other": (other, other_labels)}.items():
            np.testing.assert_array_equal(whole[image_id][0], expected)
            np.testing.assert_array_equal(whole[image_id][1], expected_labels)
            assert whole[image_id][1].dtype == np.uint16


def test_whole_images_ignores_augmented_copies() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    labels = rng.integers(0, 300, (70, 90)).astype(np.uint16)
    augmented = (255 - image, labels[::-1].copy())
    bigger = (np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100), np.uint16))  # would widen the extent
    copies = [("img", 1, *augmented), ("img", 0, image, labels), ("img", 2, *bigger), ("aug-only", 1, *augmented)]
    whole = PatchSet.from_images(copies, 32, 20).whole_images()
    assert list(whole) == ["img"]
    np.testing.assert_array_equal(whole["img"][0], image)
    np.testing.assert_array_equal(whole["img"][1], labels)
