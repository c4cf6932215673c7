"""The torch Dataset over a patch set: targets made from the instance labels, optional online augmentation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from patchunet.core.config import InstanceHead
from patchunet.data.augment import augment_pair
from patchunet.data.patches import PatchSet
from patchunet.data.targets import make_targets


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], the model's input."""
    return as_model_input(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))


def as_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float32 in [0, 1]. Batches travel from the loader workers as
    uint8, a quarter of the bytes, and become float on the device that trains on them."""
    return images.float().div_(255.0)


class PatchDataset(Dataset):
    """Items are (image (3, S, S) uint8, targets (C, S, S) float32): the nucleus mask,
    then the maps of the instance `head`, then with `contact` the contact map, all made from the
    labels after they are augmented.

    With an augmentation, each item is augmented with a seed drawn from (seed, epoch, index), so
    an epoch's data is the same whichever worker loads it and whether or not the run was resumed.
    """

    def __init__(
        self,
        patches: PatchSet,
        augmentation: A.Compose | None = None,
        seed: int = 0,
        head: InstanceHead = "none",
        contact: bool = False,
    ) -> None:
        self.patches = patches
        self.head = head
        self.contact = contact
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.patches.index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.array(self.patches.images[index])  # a writable copy out of the memory map
        labels = np.array(self.patches.labels[index])
        if self.augmentation is not None:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
            self.augmentation.set_random_seed(int(seed))
            image, labels = augment_pair(self.augmentation, image, labels)
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, torch.from_numpy(make_targets(labels, self.head, self.contact))
