"""The source stage in process: what identifies the data fetch reads, not where it lies."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from conftest import TRAIN_DIR, run_in_process


def test_the_manifest_lists_every_file_of_the_source_with_its_size_and_hash(
    stage_project: Path, synthetic_source: Path
) -> None:
    summary = run_in_process("source", stage_project, source=str(synthetic_source))
    manifest = json.loads((stage_project / "data/source.json").read_text())
    assert summary.manifest_file == stage_project / "data/source.json" and summary.files == 12
    image = f"{TRAIN_DIR}/Tissue Images/TCGA-A7-0001-01Z.tif"
    [row] = [row for row in manifest["files"] if row["path"] == image]
    data = (synthetic_source / image).read_bytes()
    assert row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_same_files_elsewhere_give_the_same_manifest(stage_project: Path, synthetic_source: Path) -> None:
    run_in_process("source", stage_project, source=str(synthetic_source))
    first = (stage_project / "data/source.json").read_bytes()
    moved = shutil.move(synthetic_source, synthetic_source.parent / "moved")
    run_in_process("source", stage_project, source=str(moved))
    assert (stage_project / "data/source.json").read_bytes() == first


def test_without_a_source_the_manifest_names_the_official_zips(stage_project: Path, monkeypatch) -> None:
    monkeypatch.delenv("MONUSEG_DIR", raising=False)
    summary = run_in_process("source", stage_project)
    manifest = json.loads((stage_project / "data/source.json").read_text())
    assert summary.source is None and [sorted(row) for row in manifest["download"]] == [["sha256", "url"]] * 2
