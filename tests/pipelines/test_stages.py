"""The DVC stage scripts in pipelines/, run as DVC runs them, on synthetic data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, TEST_DIR, TRAIN_DIR, nuclei_polygons, write_monuseg_xml

from patchunet.data.patches import PatchSet

DATA_STAGES = ("fetch", "masks", "split", "patches")


def run_stage(stage: str, project: Path, source: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MONUSEG_DIR"}
    if source is not None:
        env["MONUSEG_DIR"] = str(source)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def set_params(project: Path, **sections: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def run_data_stages(project: Path, source: Path) -> None:
    for stage in DATA_STAGES:
        result = run_stage(stage, project, source)
        assert result.returncode == 0, result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def small_project(stage_project: Path) -> Path:
    set_params(stage_project, patch={"size": 32, "stride": 24}, split={"val_fraction": 0.25})
    return stage_project


def test_data_stages_build_split_patches_without_leakage(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    split = json.loads((small_project / "data/interim/split.json").read_text())
    assert set(split) == {"train", "val", "test", "seed"}
    assert len(split["val"]) == 1 and len(split["train"]) == 3 and len(split["test"]) == 2
    train = PatchSet.load(small_project / "data/processed/patches/train")
    val = PatchSet.load(small_project / "data/processed/patches/val")
    assert {r["image_id"] for r in train.index}.isdisjoint({r["image_id"] for r in val.index})
    assert all(r["copy"] == 0 for r in val.index)
    # 100 px at size 32, stride 24: starts 0, 24, 48, 68 -> 16 patches per image and copy
    assert len(val.index) == 16 and len(train.index) == 3 * 16 * 2
    assert train.images.shape == (96, 32, 32, 3) and train.labels.dtype == np.uint16
    summary = json.loads((small_project / "metrics/patches.json").read_text())
    assert summary["augmented_patches"] == 48 and summary["total_patches"] == 112


def test_patches_says_how_many_patches_it_will_make_before_it_starts(
    small_project: Path, synthetic_source: Path
) -> None:
    run_data_stages(small_project, synthetic_source)
    result = run_stage("patches", small_project)
    first = result.stdout.splitlines()[0]
    assert first.startswith("patches: about 112 patches, 0.00 GB (") and "GB of disk free)" in first


def test_masks_stage_reports_degenerate_polygons(small_project: Path, synthetic_source: Path) -> None:
    xml = synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-A7-0001-01Z.xml"
    xml.write_text(
        xml.read_text().replace(
            "</Regions>",
            '<Region Id="99"><Vertices><Vertex X="3" Y="3"/><Vertex X="9" Y="9"/></Vertices></Region></Regions>',
        )
    )
    assert run_stage("fetch", small_project, synthetic_source).returncode == 0
    result = run_stage("masks", small_project)
    assert "TCGA-A7-0001-01Z: skipped 1 degenerate polygon" in result.stdout
    report = json.loads((small_project / "data/interim/masks_report.json").read_text())
    assert report["TCGA-A7-0001-01Z"]["xml_degenerate"] == 1


def test_patch_size_larger_than_the_image_is_one_line(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    set_params(small_project, patch={"size": 128, "stride": 128})
    assert_one_line_error(run_stage("patches", small_project), "patch.size: 128 is larger than", ".tif (100x100)")


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
    set_params(stage_project, **{section: values})
    assert_one_line_error(run_stage("patches", stage_project), message)


def test_corrupt_tiff_is_one_line_naming_the_file(small_project: Path, synthetic_source: Path) -> None:
    assert run_stage("fetch", small_project, synthetic_source).returncode == 0
    image = small_project / "data/raw/monuseg/train/images/TCGA-B0-0003-01Z.tif"
    image.write_bytes(image.read_bytes()[:200])
    assert_one_line_error(run_stage("masks", small_project), "TCGA-B0-0003-01Z.tif: corrupt or truncated")


def test_fetch_refuses_a_corrupt_source_image_before_writing(small_project: Path, synthetic_source: Path) -> None:
    image = synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-B0-0003-01Z.tif"
    image.write_bytes(image.read_bytes()[:200])
    assert_one_line_error(run_stage("fetch", small_project, synthetic_source), "TCGA-B0-0003-01Z.tif: corrupt")
    assert not (small_project / "data").exists()


def test_fetch_refuses_a_test_image_among_the_training_images(small_project: Path, synthetic_source: Path) -> None:
    assert run_stage("fetch", small_project, synthetic_source).returncode == 0
    raw = small_project / "data/raw/monuseg"
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    test_image = synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.tif"
    shutil.copy(test_image, synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-A7-0009-01Z.tif")
    shutil.copy(test_image.with_suffix(".xml"), synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-A7-0009-01Z.xml")
    assert_one_line_error(
        run_stage("fetch", small_project, synthetic_source), "TCGA-AC-0005-01Z.tif: same pixels as", "0009-01Z.tif"
    )
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before


def test_masks_writes_no_label_map_when_any_image_of_either_split_fails(
    small_project: Path, synthetic_source: Path
) -> None:
    run_data_stages(small_project, synthetic_source)
    interim = small_project / "data/interim"
    before = {p: p.read_bytes() for p in interim.rglob("*") if p.is_file()}
    raw = small_project / "data/raw/monuseg"
    train_xml = raw / "train/annotations/TCGA-A7-0001-01Z.xml"  # a change the train labels would show
    write_monuseg_xml(train_xml, nuclei_polygons(seed=9))
    (raw / "test/annotations/TCGA-FG-0006-01Z.xml").write_text("<Annotations><Region>")  # test split is broken
    assert_one_line_error(run_stage("masks", small_project), "TCGA-FG-0006-01Z.xml: malformed XML")
    assert {p: p.read_bytes() for p in interim.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (interim / "train").iterdir()) == ["labels"]


def test_empty_source_is_one_line(stage_project: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_stage("fetch", stage_project, tmp_path / "empty"), "MoNuSeg source folder is empty")


def test_no_source_and_no_network_says_what_to_set(stage_project: Path) -> None:
    set_params(stage_project, data={"train_zip_url": "http://127.0.0.1:9/train.zip"})
    assert_one_line_error(run_stage("fetch", stage_project), "set MONUSEG_DIR")


def test_a_failed_stage_keeps_the_previous_outputs(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    store = small_project / "data/processed/patches"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    last_train_id = json.loads((small_project / "data/interim/split.json").read_text())["train"][-1]
    image = small_project / "data/raw/monuseg/train/images" / f"{last_train_id}.tif"
    image.write_bytes(image.read_bytes()[:200])
    assert run_stage("patches", small_project).returncode == 1
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    assert [p.name for p in store.parent.iterdir()] == ["patches"]


def test_staging_folder_of_a_killed_patches_run_is_removed(small_project: Path, synthetic_source: Path) -> None:
    run_data_stages(small_project, synthetic_source)
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    leftover = small_project / f"data/processed/.patches.{killed.pid}.k1ll3d.tmp"
    (leftover / "train").mkdir(parents=True)
    assert run_stage("patches", small_project).returncode == 0
    assert [p.name for p in (small_project / "data/processed").iterdir()] == ["patches"]
