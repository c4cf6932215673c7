"""Your own images in the generic layout: pairing, the test list, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import USER_TEST_IDS, write_rgb_tiff, write_user_source

from patchunet.core.errors import DataError, SourceError
from patchunet.data.user_layout import check_recorded_scales, find_user_root, read_test_list, user_records


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_user_source(tmp_path / "mine")


def test_every_image_is_paired_with_its_one_annotation(source: Path) -> None:
    records = {r.image_id: r for r in user_records(source)}
    assert len(records) == 6
    assert records["slide-a-01"].instance_map == source / "labels/slide-a-01.png"
    assert records["slide-b-02"].geojson == source / "annotations/slide-b-02.geojson"
    assert records["slide-c-03"].xml == source / "annotations/slide-c-03.xml"
    assert all(sum(f is not None for f in (r.xml, r.instance_map, r.geojson)) == 1 for r in records.values())


def test_test_txt_names_the_test_split_and_every_other_image_is_train(source: Path) -> None:
    records = user_records(source)
    assert sorted(r.image_id for r in records if r.split == "test") == USER_TEST_IDS
    assert sum(r.split == "train" for r in records) == 4


def test_the_layout_is_found_in_the_source_or_the_one_folder_a_zip_unpacked_to(tmp_path: Path, source: Path) -> None:
    assert find_user_root(source) == source
    assert find_user_root(tmp_path) == source
    (tmp_path / "other" / "images").mkdir(parents=True)
    with pytest.raises(SourceError, match="2 folders hold an 'images' folder"):
        find_user_root(tmp_path)


def test_monuseg_layout_is_not_the_generic_one(synthetic_source: Path) -> None:
    assert find_user_root(synthetic_source) is None


def test_comments_and_blank_lines_in_test_txt_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text("# test images\n\n  a  \nb # the hard one\n")
    assert read_test_list(path, {"a", "b", "c"}) == {"a", "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\nzz\n", "line 2: no image 'zz' in images/"),
        ("a.tif\n", "no image 'a.tif' in images/ (write the id without its suffix)"),
        ("a\na\n", "line 2: a is listed twice"),
        ("# nothing yet\n", "lists no image"),
    ],
)
def test_a_bad_test_list_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "test.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=r"test\.txt") as error:
        read_test_list(path, {"a", "b"})
    assert message in str(error.value)


def test_a_missing_test_list_is_refused(source: Path) -> None:
    (source / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test.txt: file not found: list the test images' ids"):
        user_records(source)


def test_a_test_list_naming_every_image_leaves_no_training_image_and_is_refused(source: Path) -> None:
    (source / "test.txt").write_text("\n".join(p.stem for p in (source / "images").iterdir()))
    with pytest.raises(DataError, match=r"test\.txt: lists every image: no image is left for training"):
        user_records(source)


def test_two_annotations_for_one_image_are_refused(source: Path) -> None:
    (source / "labels/slide-b-02.png").write_bytes((source / "labels/slide-a-01.png").read_bytes())
    with pytest.raises(DataError, match=r"slide-b-02.geojson: a second annotation for slide-b-02, beside labels/"):
        user_records(source)


def test_an_xml_beside_a_geojson_is_refused(source: Path) -> None:
    (source / "annotations/slide-b-02.xml").write_bytes((source / "annotations/slide-c-03.xml").read_bytes())
    with pytest.raises(DataError, match=r"slide-b-02\.xml: a second file for slide-b-02, beside slide-b-02\.geojson"):
        user_records(source)


def test_one_id_with_two_image_suffixes_is_refused(source: Path) -> None:
    write_rgb_tiff(source / "images/slide-b-02.tif", (64, 64))
    with pytest.raises(DataError, match="a second file for slide-b-02"):
        user_records(source)


def test_an_image_without_annotation_is_refused(source: Path) -> None:
    (source / "annotations/slide-c-03.xml").unlink()
    with pytest.raises(DataError, match=r"slide-c-03\.tif: image has no annotation"):
        user_records(source)


def test_an_annotation_without_image_is_refused(source: Path) -> None:
    (source / "images/slide-b-02.png").unlink()
    with pytest.raises(DataError, match=r"slide-b-02\.geojson: annotation has no image"):
        user_records(source)


def test_no_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="images: no images"):
        user_records(tmp_path)


def write_tiff_at(path: Path, mpp: float) -> Path:
    pixels = np.zeros((16, 16, 3), np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def test_a_tiff_recording_another_scale_than_data_microns_per_pixel_is_refused(source: Path) -> None:
    write_tiff_at(source / "images/slide-a-01.tif", 0.5)
    records = user_records(source)
    with pytest.raises(
        DataError, match=r"slide-a-01.tif: records 0.5 µm per pixel, but data.microns_per_pixel is 0.25"
    ):
        check_recorded_scales(records, 0.25)
    check_recorded_scales(records, 0.5)


def test_a_scale_within_ten_percent_is_taken_as_the_same(source: Path) -> None:
    write_tiff_at(source / "images/slide-a-01.tif", 0.2527)  # an Aperio 40x scanner
    check_recorded_scales(user_records(source), 0.25)


def test_a_test_list_starting_with_a_byte_order_mark_names_its_first_image(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_bytes("a\nb\n".encode("utf-8-sig"))  # as Windows Notepad saves UTF-8
    assert read_test_list(path, {"a", "b", "c"}) == {"a", "b"}
