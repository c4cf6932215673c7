"""How the builder shards the loaders over DDP ranks (no process group needed: the ranks are given)."""

import dataclasses
import logging
import subprocess
import sys

import psutil
import pytest
import torch
from conftest import REPO_ROOT, TINY_ENGINE, disc_patches, wait_gone

from patchunet.core.config import TrainConfig, load_params, parse_section
from patchunet.core.errors import ConfigError
from patchunet.data.dataset import PatchDataset
from patchunet.training.builder import make_loaders
from patchunet.training.distributed import Ranks

CFG = dataclasses.replace(
    parse_section(TrainConfig, load_params(REPO_ROOT / "params.yaml"), "train"),
    batch_size=4,
    num_workers=0,
    **TINY_ENGINE,
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


def test_more_loader_workers_than_cpus_are_capped_in_one_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.num_workers 10000 stalled creating workers: no more than this process's CPUs start."""
    monkeypatch.setattr("patchunet.training.builder.worker_count", lambda: 2)  # any machine: 2 CPUs, 3 asked
    with caplog.at_level(logging.INFO, logger="patchunet"):
        train_loader, _ = loaders_of(0, 1, dataclasses.replace(CFG, num_workers=3))
    assert train_loader.num_workers == 2
    assert caplog.messages == ["train: train.num_workers 3 is more than the 2 CPUs here: using 2 workers"]


WORKER_SCRIPT = """
import multiprocessing, os, sys, time, torch
from torch.utils.data import DataLoader
from patchunet.training.builder import worker_settings

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        time.sleep(60 if i else 0)  # busy when its parent dies
        return os.getpid()

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    for worker_pid in DataLoader(Slow(), batch_size=None, **worker_settings(1)):
        print(worker_pid, flush=True)
"""


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])  # forkserver: Python 3.14's default
def test_loader_workers_die_with_the_process_that_made_them(tmp_path, start_method: str) -> None:
    """A worker asks the kernel for SIGKILL when its parent dies (the trainer killed by SIGKILL would
    otherwise leave it running, holding the checkout's training lock). Under forkserver the
    worker's parent is the fork server, which ends with the trainer."""
    script = tmp_path / "loader.py"
    script.write_text(WORKER_SCRIPT)
    trainer = subprocess.Popen([sys.executable, str(script), start_method], stdout=subprocess.PIPE, text=True)
    workers = []
    try:
        worker = psutil.Process(int(trainer.stdout.readline()))
        workers = [worker, *psutil.Process(trainer.pid).children(recursive=True)]
        trainer.kill()
        trainer.wait(timeout=30)
        # torch's own watchdog takes 5 s or more, and only between items
        assert not wait_gone([worker], timeout=3), f"the {start_method} worker outlived its trainer"
    finally:
        for process in workers:  # whatever the outcome, stop what this test started
            if process.is_running():
                process.kill()
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait(timeout=30)
        trainer.stdout.close()
