import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patchunet.core.files import atomic_directory, atomic_file, csv_bytes, csv_file, current_umask, write_csv
from patchunet.io.images import write_label_tiff


def test_atomic_file_leaves_old_content_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stage died")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "outs"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("stage died")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["outs"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        with atomic_file(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        with atomic_directory(tmp_path / "outs") as staging:
            (staging / "a.txt").write_text("a")
        write_label_tiff(tmp_path / "labels.tif", np.zeros((4, 4), np.uint16))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "labels.tif").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "outs").stat().st_mode) == 0o777 & ~umask


def test_current_umask_reads_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(previous)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_killed_writers_are_removed(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / f".outs.{gone}.abc123.tmp").mkdir()
    (tmp_path / f".outs.{gone}.abc123.tmp" / "big.npy").write_bytes(b"x" * 100)
    (tmp_path / f".out.json.{gone}.xyz789.tmp").write_text("half")
    with atomic_directory(tmp_path / "outs") as staging:
        (staging / "a.txt").write_text("a")
    with atomic_file(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "outs"]


def test_a_live_writers_staging_folder_is_kept(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            busy = tmp_path / f".outs.{live.pid}.abc123.tmp"
            busy.mkdir()
            other = tmp_path / f".outs.v2.{dead_pid()}.abc123.tmp"  # a sibling output's name: not ours
            other.mkdir()
            with atomic_directory(tmp_path / "outs") as staging:
                (staging / "a.txt").write_text("a")
            assert busy.is_dir() and (other.is_dir())
        finally:
            live.kill()


def test_every_csv_writer_writes_the_same_bytes(tmp_path: Path) -> None:
    rows = [{"b": 1, "a": "x,y"}, {"b": 2.5, "a": ""}]
    write_csv(tmp_path / "whole.csv", rows, ("a", "b"))
    with csv_file(tmp_path / "streamed.csv", ("a", "b")) as writer:
        for row in rows:
            writer.writerow(row)
    expected = b'a,b\r\n"x,y",1\r\n,2.5\r\n'
    assert csv_bytes(rows, ("a", "b")) == expected
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "streamed.csv").read_bytes() == expected


def test_write_csv_takes_its_header_from_the_first_row_without_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", iter([{"n": 1, "m": 2}, {"n": 3, "m": 4}]))
    assert (tmp_path / "t.csv").read_text() == "n,m\n1,2\n3,4\n"


def test_a_streamed_csv_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("old\n")
    with pytest.raises(RuntimeError), csv_file(tmp_path / "t.csv", ("a",)) as writer:
        writer.writerow({"a": 1})
        raise RuntimeError("killed mid-table")
    assert (tmp_path / "t.csv").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
