"""The checkpoints of `fit`: saved atomically, loaded without running code, set aside (the last
KEEP_PREVIOUS runs' kept), and the MLflow run a checkpoint belongs to, for `--resume`."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import time
from pathlib import Path

import torch

from patchunet.core.config import ModelConfig
from patchunet.core.errors import PatchUNetError
from patchunet.core.files import atomic_file
from patchunet.model.unet import load_tensor_file

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
PREVIOUS_PREFIX = "previous-"
"""Folders of an earlier run's checkpoints, set aside by a fresh run: previous-<time of its last.pt>."""
KEEP_PREVIOUS = 3
"""How many previous-* folders a fresh run keeps, the most recent ones: each holds a whole run's best.pt
and last.pt (12 MB for the default model), and every fresh run would add one. Every run's checkpoints
are also artifacts of its MLflow run."""
PROCESSES_KEY = "processes"
"""How many DDP processes wrote a checkpoint; absent from a single process's, whose format predates DDP."""
RANK_RNG_KEY = "rank_rng"
"""Each DDP rank's RNG state, in rank order (their dropout draws differ); rank 0's is also under "rng"."""


def save_checkpoint(state: dict, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of `fit`: tensors and plain values only, so loading it runs no code."""
    if not path.is_file():
        raise PatchUNetError(f"{path}: no checkpoint to resume from; train without --resume first")
    return load_tensor_file(path, "unreadable checkpoint")


def set_aside_checkpoints(checkpoint_dir: Path) -> Path | None:
    """Move `best.pt` and `last.pt` of an earlier run into a new `previous-<time>` folder beside them,
    then remove all but the KEEP_PREVIOUS most recent such folders.

    A fresh run must never resume an earlier run's `last.pt` by mistake, nor throw away the
    training of a run that just crashed. Returns the folder, or None when there was nothing to move.
    """
    found = [checkpoint_dir / name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT) if (checkpoint_dir / name).is_file()]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(found[0].stat().st_mtime))
    # after the last of its second, never in a gap a removed folder left: it would sort as the oldest
    same_second = [attempt for when, attempt in map(_stamp, previous_folders(checkpoint_dir)) if when == stamp]
    latest = max(same_second, default=0)
    for attempt in itertools.count(latest + 1):
        folder = checkpoint_dir / (f"{PREVIOUS_PREFIX}{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        with contextlib.suppress(FileExistsError):  # never into an existing folder: it holds an earlier run
            folder.mkdir()
            break
    for path in found:
        path.rename(folder / path.name)
    for old in previous_folders(checkpoint_dir)[:-KEEP_PREVIOUS]:
        if old != folder:  # a restored old last.pt sorts first: its folder stays, beside the kept ones
            shutil.rmtree(old)
    return folder


def previous_folders(checkpoint_dir: Path) -> list[Path]:
    """The previous-* folders in `checkpoint_dir`, oldest first (by the time in their name, then the
    number a second folder of the same second carries)."""

    return sorted((path for path in checkpoint_dir.glob(f"{PREVIOUS_PREFIX}*") if path.is_dir()), key=_stamp)


def _stamp(folder: Path) -> tuple[str, int]:
    """("20261206-120000", 2) for previous-20261206-120000-2; the number is 1 where there is none."""
    day, _, rest = folder.name.removeprefix(PREVIOUS_PREFIX).partition("-")
    clock, _, attempt = rest.partition("-")
    return f"{day}-{clock}", int(attempt) if attempt.isdigit() else 1


def resumable_run_id(checkpoint_dir: Path, model_cfg: ModelConfig, processes: int = 1) -> str:
    """The MLflow run of `checkpoint_dir`/last.pt, refusing a checkpoint of another model shape or
    of another number of DDP `processes`.

    Resuming continues the same MLflow run, so the checkpoint must name it (`fit`'s `extra_state`).
    """
    path = checkpoint_dir / LAST_CHECKPOINT
    checkpoint = load_checkpoint(path)
    check_processes(path, checkpoint, processes)
    if checkpoint.get("model_config") != dataclasses.asdict(model_cfg):
        raise PatchUNetError(
            f"{path}: was trained with model params {checkpoint.get('model_config')}, "
            f"params.yaml now has {dataclasses.asdict(model_cfg)}: restore them, or train without --resume"
        )
    if not checkpoint.get("mlflow_run_id"):
        raise PatchUNetError(f"{path}: names no MLflow run; train without --resume")
    return checkpoint["mlflow_run_id"]


def check_processes(path: Path, checkpoint: dict, processes: int) -> None:
    """Refuse to resume with another number of processes than wrote `checkpoint`: the data each rank
    takes and each rank's dropout draws would change, and the resumed run would not be the same run."""
    trained = checkpoint.get(PROCESSES_KEY, 1)
    if trained != processes:
        raise PatchUNetError(
            f"{path}: was trained by {trained} process{'es' if trained > 1 else ''}, not {processes}: "
            f"resume with --nproc {trained}, or train without --resume"
        )
