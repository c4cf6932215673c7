"""The split stage in process: an image-level split of the fetched training images."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_in_process, update_params


def test_val_comes_from_the_training_images_and_test_is_the_official_test_set(
    stage_project: Path, synthetic_source: Path
) -> None:
    update_params(stage_project, split={"val_fraction": 0.25})
    run_in_process("fetch", stage_project, source=str(synthetic_source))
    summary = run_in_process("split", stage_project)
    split = json.loads((stage_project / "data/interim/split.json").read_text())
    assert summary.split == split and split["test"] == ["TCGA-AC-0005-01Z", "TCGA-FG-0006-01Z"]
    assert len(split["train"]) == 3 and len(split["val"]) == 1
    assert sorted(split["train"] + split["val"]) == [
        f"TCGA-{s}-000{n}-01Z" for s, n in (("A7", 1), ("A7", 2), ("B0", 3), ("B0", 4))
    ]


def test_the_same_seed_gives_the_same_split(stage_project: Path, synthetic_source: Path) -> None:
    run_in_process("fetch", stage_project, source=str(synthetic_source))
    first = run_in_process("split", stage_project).split
    assert run_in_process("split", stage_project).split == first
