"""The patches stage in process, after fetch, masks and split on a synthetic source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_data_stages, run_in_process, update_params

from patchunet.core.errors import PatchUNetError
from patchunet.data.patches import PatchSet


@pytest.fixture
def small_project(stage_project: Path) -> Path:
    update_params(stage_project, patch={"size": 32, "stride": 24}, split={"val_fraction": 0.25})
    return stage_project


def test_data_stages_build_split_patches_without_leakage(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    train = PatchSet.load(small_project / "data/processed/patches/train")
    val = PatchSet.load(small_project / "data/processed/patches/val")
    assert {r["image_id"] for r in train.index}.isdisjoint({r["image_id"] for r in val.index})
    assert all(r["copy"] == 0 for r in val.index)
    # 100 px at size 32, stride 24: starts 0, 24, 48, 68 -> 16 patches per image and copy
    assert len(val.index) == 16 and len(train.index) == 3 * 16 * 2
    assert train.images.shape == (96, 32, 32, 3) and train.labels.dtype == np.uint16
    summary = json.loads((small_project / "metrics/patches.json").read_text())
    assert summary["augmented_patches"] == 48 and summary["total_patches"] == 112


def test_the_summary_is_what_metrics_patches_json_holds(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    summary = run_in_process("patches", small_project)
    assert summary.counts == json.loads((small_project / "metrics/patches.json").read_text())
    assert summary.patch_dir == small_project / "data/processed/patches"


def test_patches_says_how_many_patches_it_will_make_before_it_starts(
    small_project: Path, synthetic_source: Path, capsys: pytest.CaptureFixture
) -> None:
    run_data_stages(small_project, synthetic_source)
    capsys.readouterr()
    run_in_process("patches", small_project)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("patches: about 112 patches, 0.00 GB (") and "GB of disk free)" in first


def test_patch_size_larger_than_the_image_is_refused_naming_the_image(
    small_project: Path, synthetic_source: Path
) -> None:
    run_data_stages(small_project, synthetic_source)
    update_params(small_project, patch={"size": 128, "stride": 128})
    with pytest.raises(PatchUNetError) as refused:
        run_in_process("patches", small_project)
    assert "patch.size: 128 is larger than" in str(refused.value) and ".tif (100x100)" in str(refused.value)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("patch", {"stride": 0}, "patch.stride: Input should be greater than 0, got 0"),
        ("patch", {"size": 100, "stride": 100}, "patch.size: 100 must be a multiple of 16 (2**model.depth)"),
        ("augment", {"copies": 1_000_000_000}, "augment.copies: Input should be less than or equal to 100"),
        ("augment", {"copies": -1}, "augment.copies"),
        ("augment", {"rotate_limit": float("nan")}, "augment.rotate_limit: Input should be a finite number, got nan"),
    ],
)
def test_bad_parameters_stop_the_stage_before_any_work(stage_project: Path, section, values, message) -> None:
    update_params(stage_project, **{section: values})
    with pytest.raises(PatchUNetError) as refused:
        run_in_process("patches", stage_project)
    assert message in str(refused.value)


def test_a_failed_stage_keeps_the_previous_outputs(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    store = small_project / "data/processed/patches"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    last_train_id = json.loads((small_project / "data/interim/split.json").read_text())["train"][-1]
    image = small_project / "data/raw/monuseg/train/images" / f"{last_train_id}.tif"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(PatchUNetError):
        run_in_process("patches", small_project)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert [p.name for p in store.parent.iterdir()] == ["patches"]


def test_staging_folder_of_a_killed_patches_run_is_removed(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    leftover = small_project / f"data/processed/.patches.{killed.pid}.k1ll3d.tmp"
    (leftover / "train").mkdir(parents=True)
    run_in_process("patches", small_project)
    assert [p.name for p in (small_project / "data/processed").iterdir()] == ["patches"]
