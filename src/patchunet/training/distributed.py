"""Data-parallel training under `torchrun`: which rank this process is, and what the ranks share.

`process_group()` reads what torchrun exports (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE) and
gives a `DistributedRanks` with its process group (gloo on CPUs, NCCL on GPUs, one GPU a rank);
without torchrun, or with one process, it gives the plain `Ranks` of a single process, whose
methods return their inputs and call no torch.distributed at all, so the default run is exactly
the run of before DDP. `fit`, the loaders and the train stage take a `Ranks` and never ask which.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from patchunet.core.errors import ConfigError
from patchunet.core.resources import worker_count
from patchunet.training.devices import pick_device


@dataclasses.dataclass(frozen=True)
class Ranks:
    """One process training alone on `device`: rank 0 of 1, and every reduction is the identity."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The rank that writes checkpoints, outputs and MLflow, and prints."""
        return self.rank == 0

    def batch_share(self, batch_size: int) -> int:
        """Each rank's part of the global `train.batch_size`."""
        if batch_size % self.world_size:
            raise ConfigError(
                "train.batch_size",
                f"{batch_size} patches do not split evenly over {self.world_size} processes: "
                f"make it a multiple of {self.world_size}",
            )
        return batch_size // self.world_size

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: `model` itself, or under DDP a wrapper that averages the gradients."""
        return model

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (as float64 under DDP; as given in one process)."""
        return values

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank: for decisions that must agree, such as time spent."""
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        return [value]

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""

    def barrier(self) -> None:
        """Wait until every rank is here; end this process (status 1) if one has left instead."""


@dataclasses.dataclass(frozen=True)
class DistributedRanks(Ranks):
    """Rank `rank` of `world_size` processes started by torchrun, in a live process group."""

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, *values: float) -> tuple[float, ...]:
        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return tuple(summed.tolist())

    def from_main(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def share_buffers(self, model: torch.nn.Module) -> None:
        # DDP hands rank 0's buffers to the others at each training forward, and each rank then
        # updates its own from its own batch: after an epoch they differ. Evaluating with rank 0's
        # makes every rank score exactly the weights that rank 0 checkpoints.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        try:
            dist.barrier()
        except RuntimeError:  # gloo and NCCL raise RuntimeError and its subclasses
            # the rank that left has said why (or the launcher does, for a crash): nothing more here
            raise SystemExit(1) from None


def _close_group_on_the_way_out() -> None:
    """Close the group as this process ends with its own status, which torchrun must then report.

    Closing wakes the other ranks, whose failure makes torchrun send this rank SIGTERM; ignoring
    it keeps the status this rank is already ending with instead of -15.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dist.destroy_process_group()


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """This process's `Ranks`: torchrun's process group for the block when WORLD_SIZE > 1, else one
    process on `pick_device()`.

    Under torchrun each rank takes cuda:LOCAL_RANK (NCCL) where there are GPUs, else the CPU
    (gloo) with an equal share of the cores this machine's ranks run on.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Ranks(pick_device())
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
        torch.set_num_threads(max(1, worker_count() // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    dist.init_process_group(backend, rank=rank, world_size=world_size, device_id=device if backend == "nccl" else None)
    try:
        yield DistributedRanks(device, rank, world_size)
    except BaseException:
        # On an error, close the group at exit, after Python has reported the error: closed sooner,
        # it would wake the other ranks and torchrun would stop this one mid-sentence; left to the
        # C++ teardown, gloo's threads may abort the process ("terminate called...", status -6).
        atexit.register(_close_group_on_the_way_out)
        raise
    dist.destroy_process_group()
