"""The fetch stage in process: MoNuSeg's layout from a synthetic source, every pair checked first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TEST_DIR, TRAIN_DIR, run_in_process, update_params

from patchunet.core.errors import PatchUNetError


def fetch(project: Path, source: Path) -> None:
    run_in_process("fetch", project, source=str(source))


def test_fetch_copies_each_split_and_describes_it(stage_project: Path, synthetic_source: Path) -> None:
    summary = run_in_process("fetch", stage_project, source=str(synthetic_source))
    raw = stage_project / "data/raw/monuseg"
    dataset = json.loads((raw / "dataset.json").read_text())
    assert summary.raw_dir == raw and summary.layout == dataset["layout"] == "monuseg"
    assert summary.images == dataset["images"] and len(summary.images["train"]) == 4
    assert sorted(p.stem for p in (raw / "test/images").iterdir()) == summary.images["test"]


def test_fetch_refuses_a_corrupt_source_image_before_writing(stage_project: Path, synthetic_source: Path) -> None:
    image = synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-B0-0003-01Z.tif"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(PatchUNetError, match=r"TCGA-B0-0003-01Z.tif: corrupt"):
        fetch(stage_project, synthetic_source)
    assert not (stage_project / "data").exists()


def test_fetch_refuses_a_test_image_among_the_training_images(stage_project: Path, synthetic_source: Path) -> None:
    fetch(stage_project, synthetic_source)
    raw = stage_project / "data/raw/monuseg"
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    test_image = synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.tif"
    shutil.copy(test_image, synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-A7-0009-01Z.tif")
    shutil.copy(test_image.with_suffix(".xml"), synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-A7-0009-01Z.xml")
    with pytest.raises(PatchUNetError) as refused:
        fetch(stage_project, synthetic_source)
    assert "TCGA-AC-0005-01Z.tif: same pixels as" in str(refused.value) and "0009-01Z.tif" in str(refused.value)
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before


def test_empty_source_is_refused(stage_project: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PatchUNetError, match="MoNuSeg source folder is empty"):
        fetch(stage_project, tmp_path / "empty")


def test_no_source_and_no_network_says_what_to_set(stage_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONUSEG_DIR", raising=False)
    update_params(stage_project, data={"train_zip_url": "http://127.0.0.1:9/train.zip"})
    with pytest.raises(PatchUNetError, match="set MONUSEG_DIR"):
        run_in_process("fetch", stage_project)
