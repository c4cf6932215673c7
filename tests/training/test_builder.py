"""How the builder shards the loaders over DDP ranks (no process group needed: the ranks are given)."""

import dataclasses

import pytest
import torch
from conftest import REPO_ROOT, disc_patches

from patchunet.config import TrainConfig, load_params, parse_section
from patchunet.data.dataset import PatchDataset
from patchunet.errors import ConfigError
from patchunet.training.builder import make_loaders
from patchunet.training.distributed import Ranks

CFG = dataclasses.replace(
    parse_section(TrainConfig, load_params(REPO_ROOT / "params.yaml"), "train"), batch_size=4, num_workers=0
)
CPU = torch.device("cpu")


def loaders_of(rank: int, world_size: int, cfg: TrainConfig = CFG):
    """Rank `rank`'s loaders over 16 train patches and 10 val patches."""
    datasets = PatchDataset(disc_patches(16, seed=1)), PatchDataset(disc_patches(10, seed=2))
    return make_loaders(*datasets, cfg, Ranks(CPU, rank, world_size))


def test_the_ranks_split_each_global_batch_and_together_see_every_train_patch_once() -> None:
    samplers = []
    for rank in (0, 1):
        train_loader, _ = loaders_of(rank, 2)
        assert train_loader.batch_size == 2 and len(train_loader) == 4  # 4 global batches of 4, as one process
        train_loader.sampler.set_epoch(3)
        samplers.append(list(train_loader.sampler))
    assert sorted(samplers[0] + samplers[1]) == list(range(16))


def test_the_train_shards_are_reshuffled_each_epoch() -> None:
    train_loader, _ = loaders_of(0, 2)
    orders = []
    for epoch in (0, 1):
        train_loader.sampler.set_epoch(epoch)
        orders.append(list(train_loader.sampler))
    assert orders[0] != orders[1]


def test_val_batches_are_one_process_batches_dealt_whole_and_never_repeated() -> None:
    _, single = make_loaders(PatchDataset(disc_patches(16, seed=1)), PatchDataset(disc_patches(10, seed=2)), CFG)
    shares = [list(loaders_of(rank, 2)[1].batch_sampler) for rank in (0, 1)]
    assert shares == [[[0, 1, 2, 3], [8, 9]], [[4, 5, 6, 7]]]
    assert sorted(shares[0] + shares[1]) == [list(b) for b in single.batch_sampler]


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size: 4 patches do not split evenly over 3 processes"):
        loaders_of(0, 3)
