"""A slide's outputs from its finished tiles: nuclei numbered across tiles, in level-0 pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from patchunet.inference.slide.plan import TilePlan
from patchunet.inference.slide.tile_store import TileLabels, TileStore
from patchunet.inference.slide.tiles import nucleus_features
from patchunet.inference.slide.writers import StreamedOutputs, write_slide_outputs
from patchunet.io.geojson import rasterize_geojson
from patchunet.io.images import read_rgb_image
from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS
from patchunet.postprocess.tiling import Tile

DOWNSAMPLE, LEVEL_MPP = 2.0, 0.5
"""The tiles were read from level 1 of a 0.25 µm/px slide."""


def finished_tile(x: int, labels: np.ndarray, duplicates: int) -> dict:
    """A tile at (x, 0) of level 1, as the tile store holds it."""
    report = {"kept": int(labels.max()), "duplicates": duplicates, "cut": 0, "trimmed_pixels": 0}
    return {"features": nucleus_features(labels, (x, 0), LEVEL_MPP), "report": report}


def plan() -> TilePlan:
    tissue = np.ones((16, 32), bool)
    tiles = [Tile(0, 0, 0, 0, 16, 16), Tile(0, 1, 16, 0, 16, 16)]
    return TilePlan(1, DOWNSAMPLE, LEVEL_MPP, 32, 16, tiles, tiles, np.zeros((16, 32, 3), np.uint8), 2.0, tissue)


def two_tiles() -> list[dict]:
    left, right = np.zeros((16, 16), np.int32), np.zeros((16, 16), np.int32)
    left[2:6, 2:6] = 1
    left[8:12, 8:14] = 2
    right[4:8, 4:8] = 1
    return [finished_tile(0, left, duplicates=1), finished_tile(16, right, duplicates=2)]


def test_the_slides_nuclei_are_numbered_across_tiles_in_level_0_pixels(tmp_path: Path) -> None:
    count, dropped = write_slide_outputs(tmp_path, "s", plan(), iter(two_tiles()))
    assert (count, dropped) == (3, {"duplicates": 3, "cut": 0})
    with (tmp_path / "s_nuclei.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(NUCLEUS_COLUMNS)
    assert [row["nucleus"] for row in rows] == ["1", "2", "3"]
    third = rows[2]  # the right tile's nucleus: level-1 pixels 20..24 x 4..8
    box = (third["bbox_min_x"], third["bbox_min_y"], third["bbox_max_x"], third["bbox_max_y"])
    assert box == ("40", "8", "48", "16")
    assert (third["centroid_x"], third["area_px"], third["area_um2"]) == ("43.0", "64", "4.0")


def test_the_geojson_holds_the_same_nuclei_in_level_0_pixels_with_their_rows_as_measurements(tmp_path: Path) -> None:
    write_slide_outputs(tmp_path, "s", plan(), iter(two_tiles()))
    features = json.loads((tmp_path / "s_nuclei.geojson").read_text())["features"]
    with (tmp_path / "s_nuclei.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [feature["properties"]["name"] for feature in features] == ["Nucleus 1", "Nucleus 2", "Nucleus 3"]
    for feature, row in zip(features, rows, strict=True):
        measured = {key: str(value) for key, value in feature["properties"]["measurements"].items()}
        assert measured == {key: value for key, value in row.items() if key != "nucleus" and value != ""}
    labels = rasterize_geojson(tmp_path / "s_nuclei.geojson", (32, 64))[0]
    assert (labels[8:16, 40:48] == 3).all() and (labels == 3).sum() == 64
    assert read_rgb_image(tmp_path / "s_overview.png").shape == (16, 32, 3)


OUTPUTS = ("s_nuclei.geojson", "s_nuclei.csv", "s_overview.png")


def stored(folder: Path, done: dict) -> TileStore:
    """A tile store holding the left tile, `done`, as a resumed slide's."""
    store = TileStore(folder, {"model": "m"})
    store.save(0, 0, {**done, "labels": TileLabels.cropped(np.zeros((16, 16), np.int32), (0, 0))})
    return store


def test_streamed_outputs_read_the_stored_tiles_and_take_the_others_as_they_finish(tmp_path: Path) -> None:
    left, right = two_tiles()
    write_slide_outputs(tmp_path / "all", "s", plan(), iter(two_tiles()))
    store = stored(tmp_path / "tiles", left)
    with StreamedOutputs(tmp_path / "streamed", "s", plan(), store) as outputs:
        outputs.add(right)
        assert outputs.result() == (3, {"duplicates": 3, "cut": 0})
    for name in OUTPUTS:
        assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "all" / name).read_bytes(), name


def test_a_failed_segmentation_stops_the_writer_with_no_file_written(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", {"model": "m"})
    with pytest.raises(RuntimeError, match="tile 2 failed"), StreamedOutputs(tmp_path, "s", plan(), store) as outputs:
        outputs.add(two_tiles()[0])
        raise RuntimeError("tile 2 failed")
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("s_")]


def test_a_failed_writer_stops_the_segmentation_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the outputs' folder should be")
    store = TileStore(tmp_path / "tiles", {"model": "m"})
    with pytest.raises(OSError), StreamedOutputs(tmp_path / "out", "s", plan(), store) as outputs:
        for done in two_tiles() * 4:  # more than the queue holds: add itself must fail
            outputs.add(done)


def test_an_error_after_the_last_tile_still_writes_no_file(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", {"model": "m"})
    with (
        pytest.raises(RuntimeError, match="the label image failed"),
        StreamedOutputs(tmp_path, "s", plan(), store) as outputs,
    ):
        for done in two_tiles():
            outputs.add(done)
        raise RuntimeError("the label image failed")  # as write_label_image may, before result()
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("s_")]


def test_fewer_tiles_than_the_slides_is_an_error_not_a_hang(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", {"model": "m"})
    with (
        pytest.raises(RuntimeError, match="ended after 1 of 2 tiles"),
        StreamedOutputs(tmp_path, "s", plan(), store) as outputs,
    ):
        outputs.add(two_tiles()[0])
        outputs.result()
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("s_")]
