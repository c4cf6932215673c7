import shutil
from pathlib import Path

import pytest
import tifffile
from conftest import TEST_DIR, TRAIN_DIR, nuclei_polygons, write_monuseg_xml, write_user_source

from patchunet.core.errors import DataError, SourceError
from patchunet.data.monuseg import (
    check_no_shared_images,
    copy_to_raw,
    dataset_description,
    official_dirs,
    organ_of,
    pair_files,
    raw_dirs,
)
from patchunet.data.user_layout import user_records
from patchunet.io.images import read_rgb_image


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


@pytest.mark.parametrize(
    ("folder", "first", "second"),
    [
        (TRAIN_DIR + "/Tissue Images", "TCGA-A7-0001-01Z.tif", "TCGA-A7-0001-01Z.tiff"),
        (TRAIN_DIR + "/Instance Maps", "TCGA-A7-0002-01Z.png", "TCGA-A7-0002-01Z.tif"),
        (TRAIN_DIR + "/Annotations", "TCGA-A7-0001-01Z.xml", "TCGA-A7-0001-01Z.XML"),
    ],
)
def test_two_files_for_one_id_are_refused_naming_both(synthetic_source: Path, folder: str, first, second) -> None:
    shutil.copy(synthetic_source / folder / first, synthetic_source / folder / second)
    with pytest.raises(DataError, match=r"a second file for TCGA-A7-000\d-01Z, beside .*: keep only one") as raised:
        pair_files(official_dirs(synthetic_source), "train")
    assert first in str(raised.value) and second in str(raised.value)


def all_records(source: Path) -> list:
    dirs = official_dirs(source)
    return pair_files(dirs, "train") + pair_files(dirs, "test")


def test_distinct_images_pass_the_shared_image_check(synthetic_source: Path) -> None:
    check_no_shared_images(all_records(synthetic_source))


def test_test_image_id_among_the_training_images_is_refused(synthetic_source: Path) -> None:
    test_image = synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.tif"
    shutil.copy(test_image, synthetic_source / TRAIN_DIR / "Tissue Images" / test_image.name)
    write_monuseg_xml(synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-AC-0005-01Z.xml", nuclei_polygons(1))
    with pytest.raises(
        DataError,
        match=r"0005-01Z\.tif: test image TCGA-AC-0005-01Z is also a training image: .*Tissue Images/TCGA-AC-0005-01Z",
    ):
        check_no_shared_images(all_records(synthetic_source))


def test_test_image_renamed_and_re_encoded_among_the_training_images_is_refused(synthetic_source: Path) -> None:
    pixels = read_rgb_image(synthetic_source / TEST_DIR / "TCGA-AC-0005-01Z.tif")
    copy = synthetic_source / TRAIN_DIR / "Tissue Images" / "TCGA-A7-0009-01Z.tif"
    tifffile.imwrite(copy, pixels, photometric="rgb", compression="zlib")  # another encoding, another name
    write_monuseg_xml(synthetic_source / TRAIN_DIR / "Annotations" / "TCGA-A7-0009-01Z.xml", nuclei_polygons(1))
    with pytest.raises(DataError, match=r"TCGA-AC-0005-01Z\.tif: same pixels as .*TCGA-A7-0009-01Z\.tif \(train image"):
        check_no_shared_images(all_records(synthetic_source))


def test_user_images_copy_into_the_raw_layout_as_tiff_with_their_annotations(tmp_path: Path) -> None:
    records = user_records(write_user_source(tmp_path / "mine"))
    copy_to_raw(records, tmp_path / "raw")
    raw = raw_dirs(tmp_path / "raw")
    png = next(r for r in records if r.image.suffix == ".png")
    copied = raw.images[png.split] / f"{png.image_id}.tif"
    assert tifffile.TiffFile(copied).series[0].shape == (64, 64, 3)  # a TIFF, not PNG bytes under a .tif name
    assert (read_rgb_image(copied) == read_rgb_image(png.image)).all()
    again = {r.image_id: r for split in ("train", "test") for r in pair_files(raw, split)}
    assert again["slide-b-02"].geojson == raw.annotations["test"] / "slide-b-02.geojson"
    assert again["slide-a-01"].instance_map == raw.instance_maps["train"] / "slide-a-01.png"
    assert sorted(again) == sorted(r.image_id for r in records)


def test_a_geojson_beside_an_instance_map_in_the_raw_layout_is_refused(tmp_path: Path) -> None:
    copy_to_raw(user_records(write_user_source(tmp_path / "mine")), tmp_path / "raw")
    raw = raw_dirs(tmp_path / "raw")
    raw.instance_maps["test"].mkdir()
    shutil.copy(raw.instance_maps["train"] / "slide-a-01.png", raw.instance_maps["test"] / "slide-b-02.png")
    with pytest.raises(DataError, match=r"slide-b-02\.geojson: a second annotation for slide-b-02"):
        pair_files(raw, "test")


def test_dataset_description_gives_layout_scale_and_ids_per_split(tmp_path: Path) -> None:
    records = user_records(write_user_source(tmp_path / "mine"))
    description = dataset_description("generic", records, 0.5)
    assert description == {
        "layout": "generic",
        "microns_per_pixel": 0.5,
        "images": {
            "train": ["slide-a-01", "slide-d-04", "slide-e-05", "slide-f-06"],
            "test": ["slide-b-02", "slide-c-03"],
        },
    }
