"""The tile store: what a slide resumes from, and what it starts over."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchunet.inference.slide.tile_store import TileStore
from patchunet.postprocess.tiling import Tile

PLAN = {"model": "abc", "eval": {"threshold": 0.5}, "slide": "/slides/a.svs", "level": 0}


def done(number: int) -> dict:
    return {"features": [{"properties": {"nucleus": number}}], "report": {"duplicates": 0, "cut": 0}}


def tile(row: int, col: int) -> Tile:
    return Tile(row, col, col * 10, row * 10, 10, 10)


def test_a_store_opened_again_with_the_same_plan_has_the_tiles_saved_before(tmp_path: Path) -> None:
    first = TileStore(tmp_path / "tiles", PLAN)
    first.save(0, 1, done(1))
    again = TileStore(tmp_path / "tiles", dict(PLAN))
    assert again.has(0, 1) and not again.has(0, 0) and again.load(0, 1) == done(1)
    assert again.count([tile(0, 0), tile(0, 1)]) == 1


def test_another_plan_starts_the_folder_over_saying_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    TileStore(tmp_path / "tiles", PLAN).save(0, 0, done(1))
    store = TileStore(tmp_path / "tiles", {**PLAN, "model": "other"})
    assert not store.has(0, 0)
    assert "made with other settings, model or slide; starting the slide over" in capsys.readouterr().err


def test_a_damaged_tile_file_is_dropped_saying_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = TileStore(tmp_path / "tiles", PLAN)
    first.save(0, 0, done(1))
    first.save(0, 1, done(2))
    first.path(0, 1).write_text('{"features": [')
    store = TileStore(tmp_path / "tiles", PLAN)
    assert store.has(0, 0) and not store.has(0, 1)
    assert f"{first.path(0, 1)}: damaged (not a finished tile's JSON); the tile is redone" in capsys.readouterr().err


def test_earlier_neighbours_are_the_finished_tiles_above_and_to_the_left(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    for number, (row, col) in enumerate([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2)], start=1):
        store.save(row, col, done(number))
    # (1, 1)'s neighbours: (0, 0), (0, 1), (0, 2) above, (1, 0) to the left; never (1, 2) after it
    assert store.earlier_neighbours(tile(1, 1)) == [done(1), done(2), done(3), done(5)]
    assert store.earlier_neighbours(tile(0, 0)) == []


def test_finished_gives_the_tiles_in_order_holding_at_most_two_rows(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    tiles = [tile(row, col) for row in range(3) for col in range(2)]
    for number, each in enumerate(tiles, start=1):
        store.save(each.row, each.col, done(number))
    reopened = TileStore(tmp_path / "tiles", PLAN)
    given, rows_held = [], []
    for each in reopened.finished(tiles):
        given.append(each)
        rows_held.append({row for row, _ in reopened.loaded})
    assert given == [done(number) for number in range(1, 7)]
    assert max(len(rows) for rows in rows_held) == 2


def test_remove_deletes_the_folder(tmp_path: Path) -> None:
    store = TileStore(tmp_path / "tiles", PLAN)
    store.save(0, 0, done(1))
    store.remove()
    assert not (tmp_path / "tiles").exists()
