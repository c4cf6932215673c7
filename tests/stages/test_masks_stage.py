"""The masks stage in process: label maps from MoNuSeg's XML and instance maps, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TRAIN_DIR, nuclei_polygons, run_data_stages, run_in_process, update_params, write_monuseg_xml

from patchunet.core.errors import PatchUNetError


@pytest.fixture
def small_project(stage_project: Path) -> Path:
    update_params(stage_project, patch={"size": 32, "stride": 24}, split={"val_fraction": 0.25})
    return stage_project


def test_masks_stage_reports_degenerate_polygons(
    small_project: Path, synthetic_source: Path, capsys: pytest.CaptureFixture
) -> None:
    xml = synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-A7-0001-01Z.xml"
    xml.write_text(
        xml.read_text().replace(
            "</Regions>",
            '<Region Id="99"><Vertices><Vertex X="3" Y="3"/><Vertex X="9" Y="9"/></Vertices></Region></Regions>',
        )
    )
    run_in_process("fetch", small_project, source=str(synthetic_source))
    summary = run_in_process("masks", small_project)
    assert "TCGA-A7-0001-01Z: skipped 1 degenerate polygon" in capsys.readouterr().out
    report = json.loads((small_project / "data/interim/masks_report.json").read_text())
    assert report["TCGA-A7-0001-01Z"]["xml_degenerate"] == 1 and summary.report == report


def test_corrupt_tiff_is_refused_naming_the_file(small_project: Path, synthetic_source: Path) -> None:
    run_in_process("fetch", small_project, source=str(synthetic_source))
    image = small_project / "data/raw/monuseg/train/images/TCGA-B0-0003-01Z.tif"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(PatchUNetError, match=r"TCGA-B0-0003-01Z.tif: corrupt or truncated"):
        run_in_process("masks", small_project)


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
    with pytest.raises(PatchUNetError, match=r"TCGA-FG-0006-01Z.xml: malformed XML"):
        run_in_process("masks", small_project)
    assert {p: p.read_bytes() for p in interim.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (interim / "train").iterdir()) == ["labels"]
