"""Your own images (the generic layout) through the stages in process, fetch to register."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import (
    USER_TEST_IDS,
    geojson_polygon,
    mlflow_client,
    nuclei_tile,
    run_in_process,
    update_params,
    write_qupath_geojson,
    write_user_source,
)

from patchunet.core.errors import PatchUNetError
from patchunet.io.images import read_label_image

STAGES = ("fetch", "masks", "split", "patches", "train", "evaluate", "register")


def run_stage(project: Path, stage: str, source: Path | None = None, uri: str = ""):
    """The stage in process on `project`; fetch from `source`."""
    return run_in_process(stage, project, uri, **({"source": str(source)} if source else {}))


def refusal(project: Path, stage: str, source: Path | None = None) -> str:
    """The message of the error the stage stops with."""
    with pytest.raises(PatchUNetError) as refused:
        run_stage(project, stage, source)
    return str(refused.value)


@pytest.fixture
def project(stage_project: Path) -> Path:
    update_params(
        stage_project,
        patch={"size": 32, "stride": 32},
        split={"val_fraction": 0.25},
        augment={"copies": 0},
        model={"base_channels": 8, "depth": 2, "instance_head": "none"},
        train={"epochs": 1, "lr": 0.01, "num_workers": 0},
        eval={"window": 32, "overlap": 8, "samples": 1, "min_nucleus_area": 8, "threshold": 0.5},
    )
    return stage_project


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_user_source(tmp_path / "mine")


def test_your_own_images_run_from_fetch_to_register(project: Path, source: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    outputs = {}
    for stage in STAGES:
        run_stage(project, stage, source if stage == "fetch" else None, uri)
        outputs[stage] = capsys.readouterr().out
    dataset = json.loads((project / "data/raw/monuseg/dataset.json").read_text())
    assert dataset["layout"] == "generic" and dataset["microns_per_pixel"] == 0.25
    assert dataset["images"]["test"] == USER_TEST_IDS
    assert "fetch: generic layout at 0.25 µm per pixel" in outputs["fetch"]
    report = json.loads((project / "data/interim/masks_report.json").read_text())
    assert sorted(row["source"] for row in report.values()) == ["geojson"] * 2 + ["instance_map"] * 2 + ["xml"] * 2
    split = json.loads((project / "data/interim/split.json").read_text())
    assert split["test"] == USER_TEST_IDS and len(split["train"]) == 3 and len(split["val"]) == 1
    with (project / "reports/test_per_image.csv").open() as rows:
        assert sorted(row["image_id"] for row in csv.DictReader(rows)) == USER_TEST_IDS
    registry = json.loads((project / "models/registry.json").read_text())
    assert registry["version"] == 1
    run = mlflow_client(uri).get_run(registry["run_id"])
    assert run.data.params["data.microns_per_pixel"] == "0.25" and "model.microns_per_pixel" not in run.data.params
    assert run.data.params["dataset.layout"] == "generic"
    card = mlflow_client(uri).get_model_version("patchunet", "1").description
    assert "Your own images" in card and "named in its test.txt" in card


def test_masks_give_each_annotation_kind_the_labels_it_was_written_from(project: Path, source: Path) -> None:
    for stage in ("fetch", "masks"):
        run_stage(project, stage, source if stage == "fetch" else None)
    for n, image_id in enumerate(sorted(p.stem for p in (source / "images").iterdir())):
        split = "test" if image_id in USER_TEST_IDS else "train"
        labels = read_label_image(project / f"data/interim/{split}/labels/{image_id}.tif")
        assert (labels == nuclei_tile(64, seed=n)[1]).all(), image_id


def test_dataset_json_records_data_microns_per_pixel(project: Path, source: Path) -> None:
    update_params(project, data={"microns_per_pixel": 0.5})
    run_stage(project, "fetch", source)
    assert json.loads((project / "data/raw/monuseg/dataset.json").read_text())["microns_per_pixel"] == 0.5


def test_model_microns_per_pixel_is_refused_with_where_it_moved(project: Path) -> None:
    update_params(project, model={"microns_per_pixel": 0.25})
    line = refusal(project, "train")
    assert "model.microns_per_pixel: has moved to data.microns_per_pixel" in line


def corrupt_tiff(source: Path) -> None:
    (source / "images/slide-a-01.tif").write_bytes(b"II*\x00" + b"\x00" * 50)


def grayscale_png(source: Path) -> None:
    path = source / "images/slide-b-02.png"
    path.write_bytes(imagecodecs.png_encode(imagecodecs.png_decode(path.read_bytes())[..., 0].copy()))


def unknown_test_id(source: Path) -> None:
    (source / "test.txt").write_text("slide-b-02\nslide-z-99\n")


def no_test_list(source: Path) -> None:
    (source / "test.txt").unlink()


def labels_beside_geojson(source: Path) -> None:
    (source / "labels/slide-b-02.png").write_bytes((source / "labels/slide-a-01.png").read_bytes())


def label_png_and_tiff(source: Path) -> None:
    tifffile.imwrite(source / "labels/slide-a-01.tif", np.zeros((64, 64), np.uint16))


def label_map_of_another_shape(source: Path) -> None:
    (source / "labels/slide-a-01.png").write_bytes(imagecodecs.png_encode(np.zeros((32, 64), np.uint16)))


def negative_label_ids(source: Path) -> None:
    labels = read_label_image(source / "labels/slide-a-01.png").astype(np.int32)
    labels[labels == 1] = -1
    (source / "labels/slide-a-01.png").unlink()
    tifffile.imwrite(source / "labels/slide-a-01.tif", labels)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (corrupt_tiff, "slide-a-01.tif: corrupt or truncated"),
        (grayscale_png, "slide-b-02.png: grayscale image"),
        (unknown_test_id, "test.txt: line 2: no image 'slide-z-99' in images/"),
        (no_test_list, "test.txt: file not found"),
        (labels_beside_geojson, "slide-b-02.geojson: a second annotation for slide-b-02, beside labels/slide-b-02.png"),
        (label_png_and_tiff, "slide-a-01.tif: a second file for slide-a-01, beside slide-a-01.png"),
        # your own file, not fetch's copy in data/raw/monuseg/train/instance_maps/
        (label_map_of_another_shape, "labels/slide-a-01.png: label map is 64x32 but its image slide-a-01.tif is 64x64"),
        (negative_label_ids, "labels/slide-a-01.tif: label map holds negative ids (down to -1)"),
    ],
)
def test_fetch_refuses_bad_input_in_one_line_and_writes_nothing(project: Path, source: Path, breakage, message) -> None:
    breakage(source)
    assert message in refusal(project, "fetch", source)
    assert not (project / "data").exists()


def malformed_geojson(source: Path) -> None:
    (source / "annotations/slide-b-02.geojson").write_text("{")


def empty_geojson(source: Path) -> None:
    (source / "annotations/slide-b-02.geojson").write_text('{"type": "FeatureCollection", "features": []}')


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (malformed_geojson, "slide-b-02.geojson: not valid JSON"),
        (empty_geojson, "slide-b-02.geojson: no usable polygon: 0 polygon features"),
    ],
)
def test_masks_refuses_bad_annotations_in_one_line_and_writes_nothing(
    project: Path, source: Path, breakage, message
) -> None:
    breakage(source)
    run_stage(project, "fetch", source)
    assert message in refusal(project, "masks")
    assert not (project / "data/interim").exists()


def test_a_geojson_polygon_crossing_itself_is_skipped_and_counted_in_the_masks_report(
    project: Path, source: Path, capsys: pytest.CaptureFixture
) -> None:
    path = source / "annotations/slide-b-02.geojson"
    collection = json.loads(path.read_text())
    collection["features"].append(geojson_polygon([(2, 2), (12, 12), (12, 2), (2, 12)]))  # a figure eight
    path.write_text(json.dumps(collection))
    run_stage(project, "fetch", source)
    capsys.readouterr()
    run_stage(project, "masks")
    row = json.loads((project / "data/interim/masks_report.json").read_text())["slide-b-02"]
    assert (row["geojson_self_intersecting"], row["nuclei"]) == (1, len(collection["features"]) - 1)
    assert "masks: slide-b-02: skipped 1 GeoJSON polygon(s) whose outline crosses itself" in capsys.readouterr().out


REAL_XML, REAL_GEOJSON, REAL_LABELS = "TCGA-21-5784-01Z-00-DX1", "TCGA-A7-A13E-01Z-00-DX1", "TCGA-18-5592-01Z-00-DX1"


def write_real_images_as_your_own(monuseg: Path, root: Path) -> dict[str, np.ndarray]:
    """Three real training images in the generic layout: one with its XML, one (as PNG) with a GeoJSON
    written from its instance map, one with its instance map as labels/; returns the MoNuSeg route's labels."""
    from patchunet.data.masks import make_label_map
    from patchunet.data.monuseg import official_dirs, pair_files
    from patchunet.io.images import read_rgb_image, write_png

    records = {r.image_id: r for r in pair_files(official_dirs(monuseg), "train")}
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "annotations").mkdir()
    for image_id in (REAL_XML, REAL_LABELS):
        (root / f"images/{image_id}.tif").write_bytes(records[image_id].image.read_bytes())
    write_png(root / f"images/{REAL_GEOJSON}.png", read_rgb_image(records[REAL_GEOJSON].image))
    (root / f"annotations/{REAL_XML}.xml").write_bytes(records[REAL_XML].xml.read_bytes())
    write_qupath_geojson(
        root / f"annotations/{REAL_GEOJSON}.geojson", read_label_image(records[REAL_GEOJSON].instance_map)
    )
    (root / f"labels/{REAL_LABELS}.png").write_bytes(records[REAL_LABELS].instance_map.read_bytes())
    (root / "test.txt").write_text(f"{REAL_LABELS}\n")
    return {
        REAL_XML: make_label_map(records[REAL_XML], prefer="xml").labels,
        REAL_GEOJSON: make_label_map(records[REAL_GEOJSON], prefer="instance_map").labels,
        REAL_LABELS: make_label_map(records[REAL_LABELS], prefer="xml").labels,
    }


def test_real_images_as_your_own_get_the_labels_of_the_monuseg_route(
    real_monuseg: Path, project: Path, tmp_path: Path
) -> None:
    expected = write_real_images_as_your_own(real_monuseg, tmp_path / "mine")
    for stage in ("fetch", "masks"):
        run_stage(project, stage, tmp_path / "mine" if stage == "fetch" else None)
    for image_id, labels in expected.items():
        split = "test" if image_id == REAL_LABELS else "train"
        made = read_label_image(project / f"data/interim/{split}/labels/{image_id}.tif")
        np.testing.assert_array_equal(made, labels, err_msg=image_id)
    report = json.loads((project / "data/interim/masks_report.json").read_text())
    assert {k: v["source"] for k, v in report.items()} == {
        REAL_XML: "xml",
        REAL_GEOJSON: "geojson",
        REAL_LABELS: "instance_map",
    }
