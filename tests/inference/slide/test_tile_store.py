"""The tile store: what a slide resumes from, and what it starts over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patchunet.inference.slide.tile_store import TileLabels, TileStore
from patchunet.postprocess.tiling import Tile

PLAN = {"model": "abc", "eval": {"threshold": 0.5}, "slide": "/slides/a.svs", "level": 0}


def done(number: int) -> dict:
    return {"features": [{"properties": {"nucleus": number}}], "report": {"duplicates": 0, "cut": 0}}


def finished(number: int) -> dict:
    """`done(number)` as `stitched_tile` gives it: with its one nucleus as labels, at x = 100 * number + 3."""
    kept = np.zeros((10, 10), np.int32)
    kept[2:5, 3:7] = 1
    return {**done(number), "labels": TileLabels.cropped(kept, (100 * number, 50))}


def tile(row: int, col: int) -> Tile:
    return Tile(row, col, col * 10, row * 10, 10, 10)


def test_a_store_opened_again_with_the_same_plan_has_the_tiles_saved_before(tmp_path: Path) -> None:
    first = TileStore(tmp_path / "tiles", PLAN)
    first.save(0, 1, finished(1))
    again = TileStore(tmp_path / "tiles", dict(PLAN))
    assert again.has(0, 1) and not again.has(0, 0) and again.load(0, 1) == done(1)
    assert again.count([tile(0, 0), tile(0, 1)]) == 1


def test_another_plan_starts_the_folder_over_saying_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    TileStore(tmp_path / "tiles", PLAN).save(0, 0, finished(1))
    store = TileStore(tmp_path / "tiles", {**PLAN, "model": "other"})
    assert not store.has(0, 0)
    assert "made with other settings, model or slide; starting the slide over" in capsys.readouterr().err


def test_a_damaged_tile_file_is_dropped_saying_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = TileStore(tmp_path / "tiles", PLAN)
    first.save(0, 0, finished(1))
    first.save(0, 1, finished(2))
    first.path(0, 1).write_text('{"features": [')
    store = TileStore(tmp_path / "tiles", PLAN)
    assert store.has(0, 0) and not store.has(0, 1)
    assert f"{first.path(0, 1)}: damaged (not a finished tile's JSON); the tile is redone" in capsys.readouterr().err


def test_earlier_neighbours_are_the_finished_tiles_above_and_to_the_left(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    for number, (row, col) in enumerate([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2)], start=1):
        store.save(row, col, finished(number))
    # (1, 1)'s neighbours: (0, 0), (0, 1), (0, 2) above, (1, 0) to the left; never (1, 2) after it
    assert [labels.x for labels in store.earlier_neighbours(tile(1, 1))] == [103, 203, 303, 503]
    assert store.earlier_neighbours(tile(0, 0)) == []


def test_finished_gives_the_tiles_in_order(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    tiles = [tile(row, col) for row in range(3) for col in range(2)]
    for number, each in enumerate(tiles, start=1):
        store.save(each.row, each.col, finished(number))
    assert list(TileStore(tmp_path / "tiles", PLAN).finished(tiles)) == [done(number) for number in range(1, 7)]


def test_remove_deletes_the_folder(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    store.save(0, 0, finished(1))
    store.remove()
    assert not (tmp_path / "tiles").exists()


def test_a_tiles_labels_come_back_cropped_to_its_nuclei_with_their_count(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    store.save(0, 0, finished(1))
    labels = store.labels(0, 0)
    assert (labels.x, labels.y, labels.count, labels.labels.dtype) == (103, 52, 1, np.uint16)
    assert np.array_equal(labels.labels, np.ones((3, 4), np.uint16))
    assert store.nucleus_counts([tile(0, 0)]) == [1]


def test_labels_of_more_nuclei_than_uint16_holds_are_uint32_and_none_are_empty() -> None:
    many = np.arange(70000, dtype=np.int32).reshape(280, 250)
    assert TileLabels.cropped(many, (0, 0)).labels.dtype == np.uint32
    empty = TileLabels.cropped(np.zeros((8, 8), np.int32), (5, 6))
    assert empty.count == 0 and empty.labels.shape == (0, 0)


def test_a_tile_killed_between_its_two_files_is_not_finished(tmp_path: Path) -> None:
    """Its labels are written first: labels without the JSON are an unfinished tile, redone."""
    first = TileStore(tmp_path / "tiles", PLAN)
    first.save(0, 0, finished(1))
    first.path(0, 0).unlink()
    assert not TileStore(tmp_path / "tiles", PLAN).has(0, 0)


def test_a_tile_whose_labels_are_missing_or_damaged_is_redone_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = TileStore(tmp_path / "tiles", PLAN)
    for col in range(3):
        first.save(0, col, finished(col))
    first.labels_path(0, 1).unlink()
    damaged = first.labels_path(0, 2)
    damaged.write_bytes(damaged.read_bytes()[:-40])
    store = TileStore(tmp_path / "tiles", PLAN)
    assert store.has(0, 0) and not store.has(0, 1) and not store.has(0, 2)
    err = capsys.readouterr().err
    assert all(f"{first.path(0, col)}: its labels are missing or damaged; the tile is redone" in err for col in (1, 2))


def test_a_store_made_before_tiles_kept_their_labels_starts_over(tmp_path: Path) -> None:
    """Its plan.json lacks the tile files the store now writes."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps(PLAN))
    (folder / "0000_0000.json").write_text(json.dumps(done(1)))
    store = TileStore(folder, PLAN)
    assert not store.has(0, 0) and not (folder / "0000_0000.json").exists()


@pytest.mark.distributed
def test_a_mirrored_store_resumes_on_another_machine_from_the_object_storage_alone(
    s3_bucket: str, tmp_path: Path
) -> None:
    """What one machine saved, another (here: an empty local folder) opens from the mirror on a real
    S3-protocol server; a damaged tile or another plan leaves the mirror too; removing empties it."""
    from patchunet.io.remote_folder import RemoteFolder

    mirror = RemoteFolder(f"{s3_bucket}/slide_tiles")
    first = TileStore(tmp_path / "machine1", PLAN, mirror)
    first.save(0, 0, finished(1))
    first.save(0, 1, finished(2))
    assert mirror.names() == [
        "0000_0000.json",
        "0000_0000.labels.npz",
        "0000_0001.json",
        "0000_0001.labels.npz",
        "plan.json",
    ]
    second = TileStore(tmp_path / "machine2", PLAN, mirror)
    assert second.load(0, 1) == done(2)
    assert np.array_equal(second.labels(0, 1).labels, first.labels(0, 1).labels)
    assert second.count([tile(0, 0), tile(0, 1), tile(0, 2)]) == 2

    second.path(0, 1).write_text('{"features": [')
    mirror.upload(second.path(0, 1))
    third = TileStore(tmp_path / "machine3", PLAN, mirror)
    assert third.has(0, 0) and not third.has(0, 1) and "0000_0001.json" not in mirror.names()
    fourth = TileStore(tmp_path / "machine4", {**PLAN, "model": "other"}, mirror)
    assert not fourth.has(0, 0) and mirror.names() == ["plan.json"]
    fourth.save(1, 1, finished(3))
    fourth.remove()
    assert mirror.names() == [] and not (tmp_path / "machine4").exists()
