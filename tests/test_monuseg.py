from pathlib import Path

import pytest
from conftest import TEST_DIR, TRAIN_DIR

from patchunet.errors import DataError, SourceError
from patchunet.monuseg import copy_to_raw, official_dirs, organ_of, pair_files, raw_dirs


@pytest.mark.parametrize(
    ("image_id", "organ"),
    [
        ("TCGA-A7-A13E-01Z-00-DX1", "breast"),
        ("TCGA-HE-7128-01Z-00-DX1", "kidney"),
        ("TCGA-21-5784-01Z-00-DX1", "lung"),
        ("TCGA-G9-6362-01Z-00-DX1", "prostate"),
        ("TCGA-FG-A4MU-01B-01-TS1", "brain"),
        ("TCGA-ZZ-0000", "unknown"),
        ("slide_7", "unknown"),
    ],
)
def test_organ_follows_the_tcga_site_code(image_id: str, organ: str) -> None:
    assert organ_of(image_id) == organ


def test_pairs_xml_and_instance_maps_with_their_images(synthetic_source: Path) -> None:
    records = pair_files(official_dirs(synthetic_source), "train")
    assert len(records) == 4
    assert sum(r.xml is not None for r in records) == 2
    assert all((r.xml or r.instance_map) is not None for r in records)
    assert [r.image_id for r in pair_files(official_dirs(synthetic_source), "test")] == [
        "TCGA-AC-0005-01Z",
        "TCGA-FG-0006-01Z",
    ]


def test_image_without_annotation_is_refused(synthetic_source: Path) -> None:
    (synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.xml").unlink()
    with pytest.raises(DataError, match=r"TCGA-AC-0005-01Z\.tif: image has no annotation"):
        pair_files(official_dirs(synthetic_source), "test")


def test_annotation_without_image_is_refused(synthetic_source: Path) -> None:
    (synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-A7-0001-01Z.tif").unlink()
    with pytest.raises(DataError, match=r"TCGA-A7-0001-01Z\.xml: annotation has no image"):
        pair_files(official_dirs(synthetic_source), "train")


def test_folder_without_the_official_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "something").mkdir()
    with pytest.raises(SourceError, match="no 'MoNuSeg 2018 Training Data' folder"):
        official_dirs(tmp_path)


def test_copy_to_raw_gives_the_project_layout(synthetic_source: Path, tmp_path: Path) -> None:
    dirs = official_dirs(synthetic_source)
    copy_to_raw(pair_files(dirs, "train") + pair_files(dirs, "test"), tmp_path / "raw")
    raw = raw_dirs(tmp_path / "raw")
    assert len(pair_files(raw, "train")) == 4 and len(pair_files(raw, "test")) == 2
    assert sorted(p.name for p in raw.annotations["train"].iterdir()) == [
        "TCGA-A7-0001-01Z.xml",
        "TCGA-B0-0003-01Z.xml",
    ]
