import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from patchunet.core.errors import PatchUNetError
from patchunet.core.locking import exclusive_lock, sole_holder, storage_lock


def test_an_unreachable_postgresql_is_one_line_without_its_password() -> None:
    url = "postgresql+psycopg2://tuner:secret@127.0.0.1:9/optuna"
    with pytest.raises(PatchUNetError, match="cannot connect to PostgreSQL") as raised, storage_lock(url, "study"):
        pass
    assert "secret" not in str(raised.value) and "\n" not in str(raised.value)


def test_an_exclusive_lock_leaves_no_lock_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for key in ("a", "b", "c"):
        with exclusive_lock(key):
            assert len(list(tmp_path.glob("patchunet-*.lock"))) == 1
    assert list(tmp_path.iterdir()) == []


def add_one_under_the_lock(counter: str, tmp: str, times: int) -> None:
    tempfile.tempdir = tmp
    for _ in range(times):
        with exclusive_lock("counter"):
            value = int(Path(counter).read_text())
            time.sleep(0.001)  # widen the window a lost update needs
            Path(counter).write_text(str(value + 1))


def test_an_exclusive_lock_still_excludes_while_its_file_comes_and_goes(tmp_path: Path) -> None:
    """Each holder removes the file as it releases it; processes that opened it before must not
    take the lock of the removed file beside the holder of the new one: no increment is lost."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    (tmp_path / "locks").mkdir()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=add_one_under_the_lock, args=(str(counter), str(tmp_path / "locks"), 40))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert int(counter.read_text()) == 160
    assert list((tmp_path / "locks").iterdir()) == []


def test_a_sole_holder_refuses_a_second_holder_naming_the_first_pid(tmp_path: Path) -> None:
    path = tmp_path / "train.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from patchunet.core.locking import sole_holder\n"
            f"with sole_holder(Path({str(path)!r}), 'training'):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        message = rf"train\.lock: PID {holder.pid} is already running training here"
        with pytest.raises(PatchUNetError, match=message), sole_holder(path, "training"):
            pass
        holder.kill()  # SIGKILL: no chance to release or remove anything
        holder.wait(timeout=30)
        with sole_holder(path, "training"):
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert not path.exists()
