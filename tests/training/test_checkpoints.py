import dataclasses
import os
from pathlib import Path

import pytest
import torch

from patchunet.core.config import ModelConfig
from patchunet.core.errors import PatchUNetError
from patchunet.training.checkpoints import (
    KEEP_PREVIOUS,
    LAST_CHECKPOINT,
    PROCESSES_KEY,
    resumable_run_id,
    save_checkpoint,
    set_aside_checkpoints,
)

MODEL = ModelConfig(base_channels=8, depth=2, norm="batch", dropout=0.1, instance_head="none", microns_per_pixel=0.25)


def test_setting_aside_never_overwrites_an_earlier_folder(tmp_path: Path) -> None:
    folders = []
    for run in range(3):
        (tmp_path / LAST_CHECKPOINT).write_text(f"run {run}")
        os.utime(tmp_path / LAST_CHECKPOINT, (1_700_000_000, 1_700_000_000))  # same second each time
        folders.append(set_aside_checkpoints(tmp_path))
    assert len(set(folders)) == 3
    assert [(f / LAST_CHECKPOINT).read_text() for f in folders] == ["run 0", "run 1", "run 2"]
    assert set_aside_checkpoints(tmp_path) is None


def test_setting_aside_keeps_only_the_most_recent_previous_folders(tmp_path: Path) -> None:
    """Each fresh run adds a previous-* folder; only the last KEEP_PREVIOUS stay, whatever their order
    on disk (two in one second carry -2, -3, ... -10, which must sort after -9)."""
    made = []
    for run in range(12):
        (tmp_path / LAST_CHECKPOINT).write_text(f"run {run}")
        second = 1_700_000_000 + (0 if run < 11 else 60)  # ten in one second, then a later one
        os.utime(tmp_path / LAST_CHECKPOINT, (second, second))
        made.append(set_aside_checkpoints(tmp_path))
    kept = sorted(tmp_path.glob("previous-*"))
    assert set(kept) == set(made[-KEEP_PREVIOUS:]) and KEEP_PREVIOUS == 3
    assert sorted((f / LAST_CHECKPOINT).read_text() for f in kept) == ["run 10", "run 11", "run 9"]


def write_last(folder: Path, **state: object) -> None:
    save_checkpoint({"model": {"w": torch.zeros(1)}, **state}, folder / LAST_CHECKPOINT)


def test_resuming_continues_the_mlflow_run_the_checkpoint_names(tmp_path: Path) -> None:
    write_last(tmp_path, mlflow_run_id="abc123", model_config=dataclasses.asdict(MODEL))
    assert resumable_run_id(tmp_path, MODEL) == "abc123"


def test_resuming_refuses_a_checkpoint_of_another_model_shape(tmp_path: Path) -> None:
    write_last(tmp_path, mlflow_run_id="abc123", model_config=dataclasses.asdict(MODEL))
    wider = dataclasses.replace(MODEL, base_channels=16)
    with pytest.raises(PatchUNetError, match=r"last\.pt: was trained with model params .*restore them"):
        resumable_run_id(tmp_path, wider)


def test_resuming_refuses_a_checkpoint_that_names_no_run(tmp_path: Path) -> None:
    write_last(tmp_path, model_config=dataclasses.asdict(MODEL))
    with pytest.raises(PatchUNetError, match=r"last\.pt: names no MLflow run; train without --resume"):
        resumable_run_id(tmp_path, MODEL)


def test_resuming_without_a_checkpoint_says_to_train_first(tmp_path: Path) -> None:
    with pytest.raises(PatchUNetError, match=r"last\.pt: no checkpoint to resume from; train without --resume first"):
        resumable_run_id(tmp_path, MODEL)


@pytest.mark.parametrize(("trained", "resuming"), [(2, 1), (None, 2), (2, 4)])
def test_resuming_refuses_a_checkpoint_of_another_number_of_processes(
    tmp_path: Path, trained: int | None, resuming: int
) -> None:
    """A DDP checkpoint says how many processes wrote it; a single process's (written before DDP) says nothing."""
    write_last(
        tmp_path,
        mlflow_run_id="abc123",
        model_config=dataclasses.asdict(MODEL),
        **({} if trained is None else {PROCESSES_KEY: trained}),
    )
    with pytest.raises(PatchUNetError, match=rf"last\.pt: was trained by {trained or 1} process(es)?, not {resuming}"):
        resumable_run_id(tmp_path, MODEL, resuming)
    assert resumable_run_id(tmp_path, MODEL, trained or 1) == "abc123"
