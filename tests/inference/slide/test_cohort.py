"""`predict-slide --scheduler` and `--workers` on real Dask processes on loopback: a `dask scheduler`
and two `dask worker`s (no nanny, so `kill -9` kills the worker itself), three small pyramidal
slides of dark discs on glass, and a tiny model that finds them. Every output must equal a
single-machine run's, even with a worker killed mid-slide."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import free_port, make_train_project, run_cli, train_in, update_params, wait_gone
from skimage.draw import disk

from patchunet.io.slides import write_pyramidal_tiff

pytestmark = pytest.mark.distributed

SIDE = 1024  # 4 x 4 tiles of 256 px
SLIDES = 3
DASK = Path(sys.executable).with_name("dask")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project tiling slides by 256 px, with a tiny model trained to find dark discs on glass."""
    project = make_train_project(tmp_path_factory.mktemp("cohort") / "project")
    update_params(
        project,
        model={"instance_head": "none"},
        train={"epochs": 5},
        eval={"window": 64, "overlap": 16, "min_nucleus_area": 8, "threshold": 0.5},
        slide={"tile_size": 256, "tile_margin": 32},
    )
    train_in(project)
    return project


def disc_slide(path: Path, seed: int) -> Path:
    """A SIDE x SIDE pyramidal slide at 0.25 µm/px of dark discs ('nuclei') on light glass."""
    rng = np.random.default_rng(seed)
    pixels = np.full((SIDE, SIDE, 3), 220, np.uint8)
    for _ in range(300):
        rows, cols = disk(rng.integers(6, SIDE - 6, 2), rng.integers(3, 6), shape=(SIDE, SIDE))
        pixels[rows, cols] = (70, 40, 120)
    write_pyramidal_tiff(path, np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8), 0.25)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slides")
    return [disc_slide(folder / f"slide{n}.tif", seed=n) for n in range(SLIDES)]


def predict_slide(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(project, "", "predict-slide", "--model", str(project / "models/patchunet.pt"), *args)


@pytest.fixture(scope="module")
def single_machine(project: Path, slides: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slides' outputs from a run without Dask."""
    out = tmp_path_factory.mktemp("single")
    result = predict_slide(project, *map(str, slides), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def assert_same_outputs(out: Path, expected: Path, slides: list[Path]) -> None:
    """The GeoJSON, CSV and overview byte for byte, the label image's pixels, of every slide."""
    for slide in slides:
        for suffix in ("_nuclei.geojson", "_nuclei.csv", "_overview.png"):
            assert (out / f"{slide.stem}{suffix}").read_bytes() == (expected / f"{slide.stem}{suffix}").read_bytes()
        labels = [tifffile.imread(folder / f"{slide.stem}_labels.ome.tif") for folder in (out, expected)]
        assert np.array_equal(*labels)
    assert json.loads((expected / f"{slides[0].stem}_nuclei.geojson").read_text())["features"]  # nuclei compared


def summary(out: Path) -> dict[str, dict]:
    with (out / "slides.csv").open() as f:
        return {Path(row["slide"]).stem: row for row in csv.DictReader(f)}


class Cluster:
    """A `dask scheduler` and named `dask worker` processes on loopback, each logging to a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *command: str) -> None:
        log = (self.folder / f"{name}.log").open("w")
        scratch = self.folder / f"{name}.tmp"  # a killed worker's working folder stays in the test's
        scratch.mkdir()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)}  # its log read while it runs
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def stop(self) -> None:
        import psutil

        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        assert not wait_gone([psutil.Process(p.pid) for p in self.processes.values() if p.poll() is None], 10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler and two single-threaded workers, w0 and w1, ready; all killed at teardown."""
    from distributed import Client

    cluster = Cluster(tmp_path)
    port = cluster.address.rsplit(":", 1)[1]
    try:
        cluster.start("scheduler", str(DASK), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
        for name in ("w0", "w1"):
            worker = ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name, "--host", "127.0.0.1"]
            cluster.start(name, str(DASK), "worker", cluster.address, *worker)
        with Client(cluster.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["folder", "s3"])
def shared_out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the workers write: a folder, or a prefix in a bucket of a real S3-protocol server (the
    environment pointing at it set before the cluster starts, so its workers inherit it: a test
    names this fixture before `cluster`, and pytest sets up fixtures of one scope in that order)."""
    if request.param == "folder":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('s3_bucket')}/out"


def files(out: str, pattern: str) -> list[str]:
    """The files matching `pattern` in the folder or object storage `out`, as they are now."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    fs.invalidate_cache()
    return fs.glob(f"{root}/{pattern}")


def local_copy(out: str, tmp_path: Path) -> Path:
    """`out` as a local folder: itself, or object storage's files downloaded."""
    if "://" not in out:
        return Path(out)
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    fs.get(f"{root}/", f"{tmp_path / 'copy'}/", recursive=True)
    return tmp_path / "copy"


def test_a_worker_killed_mid_slide_costs_only_its_unfinished_tiles(
    project: Path, slides: list[Path], single_machine: Path, shared_out: str, cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 of a worker holding finished tiles of its slide: the scheduler gives the slide to the
    other worker, which resumes from exactly the tiles the dead one finished, in a shared folder or
    on object storage."""
    from distributed import Client

    command = [sys.executable, "-m", "patchunet", "predict-slide", *map(str, slides), "--out", shared_out]
    command += ["--model", str(project / "models/patchunet.pt"), "--scheduler", cluster.address]
    log = (tmp_path / "client.log").open("w")
    with (
        Client(cluster.address, timeout=30) as watcher,
        subprocess.Popen(command, cwd=project, stdout=log, stderr=subprocess.STDOUT) as run,
    ):
        try:
            victim, stem = worker_mid_slide(watcher, shared_out, run)
            os.kill(cluster.processes[victim].pid, signal.SIGSTOP)  # its finished tiles counted while none can be added
            finished = len(files(shared_out, f"{stem}_tiles/0*.json"))
            os.kill(cluster.processes[victim].pid, signal.SIGKILL)
            cluster.processes[victim].wait(10)
            assert not files(shared_out, f"{stem}_nuclei.geojson")  # killed before the slide was done
            assert run.wait(120) == 0, (tmp_path / "client.log").read_text()
        finally:
            run.kill()
    survivor = ({"w0", "w1"} - {victim}).pop()
    tissue = summary(single_machine)[stem]["tissue_tiles"]
    assert f"{stem}.tif: resuming, {finished} of {tissue} tissue tiles already done" in cluster.log(survivor)
    assert not files(shared_out, "*_tiles/*")  # each slide's tiles removed once its outputs were written
    out = local_copy(shared_out, tmp_path)
    rows = summary(out)
    assert sorted(rows) == [slide.stem for slide in slides]
    assert rows[stem]["worker"] == survivor and {row["worker"] for row in rows.values()} <= {"w0", "w1"}
    assert_same_outputs(out, single_machine, slides)


def worker_mid_slide(watcher, out: str, run: subprocess.Popen) -> tuple[str, str]:
    """(worker name, slide stem) of a worker whose slide has finished tiles and many still to do."""
    names = {address: info["name"] for address, info in watcher.scheduler_info(n_workers=-1)["workers"].items()}
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        for address, keys in watcher.processing().items():
            for key in keys:
                stem = str(key).removeprefix("predict-slide-").rsplit("-", 1)[0]
                if 2 <= len(files(out, f"{stem}_tiles/0*.json")) <= 10:
                    return names[address], stem
        time.sleep(0.02)
    raise AssertionError("no worker was seen mid-slide")


def test_local_workers_give_the_single_machine_outputs_beside_earlier_rows(
    project: Path, slides: list[Path], single_machine: Path, shared_out: str, tmp_path: Path
) -> None:
    import fsspec

    before_worker = (single_machine / "slides.csv").read_text().splitlines()[0].removesuffix(",worker")
    with fsspec.open(f"{shared_out}/slides.csv", "w", auto_mkdir=True) as f:
        f.write(f"{before_worker}\nother.tif{',1' * before_worker.count(',')}\n")
    result = predict_slide(project, *map(str, slides[:2]), "--out", shared_out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    tiles = sum(int(summary(single_machine)[slide.stem]["tissue_tiles"]) for slide in slides[:2])
    shown = re.findall(r"2 slides: +\d+%\|[^|]*\| (\d+)/(\d+) ", result.stderr)  # the client's bar, over both
    assert shown and shown[-1] == (str(tiles), str(tiles)), result.stderr
    assert not re.search(r"slide\d: +\d+%", result.stderr)  # no worker's own bar among it
    again = predict_slide(project, str(slides[0]), "--out", shared_out)
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == f"error: {shared_out}/{slides[0].stem}_nuclei.geojson: already exists: pass --overwrite to replace it"
    )
    out = local_copy(shared_out, tmp_path)
    assert_same_outputs(out, single_machine, slides[:2])
    assert {row["worker"] for row in summary(single_machine).values()} == {"local"}
    rows = summary(out)
    assert rows.pop("other")["worker"] == ""  # an earlier run's row, from before the worker column, kept
    assert len({row["worker"] for row in rows.values()}) == 2
    assert all(row["worker"].startswith("tcp://127.0.0.1:") for row in rows.values())


def test_a_run_here_writes_to_object_storage_and_keeps_no_local_copy(
    project: Path, slides: list[Path], single_machine: Path, s3_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    """Without Dask, on a real S3-protocol server: the single-machine outputs, uploaded from a local
    temporary folder that is removed after; existing outputs refused without --overwrite, and storage
    that cannot be written or a damaged summary there refused in one line before any work."""
    import fsspec

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = f"{s3_bucket}/here"
    first = predict_slide(project, str(slides[0]), "--out", out, "--no-label-image")
    assert first.returncode == 0, first.stderr
    assert not files(out, "*_labels.ome.tif") and not files(out, "*_tiles/*")
    refused = predict_slide(project, str(slides[0]), "--out", out, "--no-label-image")
    expected = f"error: {out}/{slides[0].stem}_nuclei.geojson: already exists: pass --overwrite to replace it"
    assert refused.returncode == 1 and refused.stderr.strip() == expected
    again = predict_slide(project, str(slides[0]), "--out", out, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # the slide's working folder and the summary's copy gone
    copy = local_copy(out, tmp_path)
    assert_same_outputs(copy, single_machine, slides[:1])
    assert [row["worker"] for row in summary(copy).values()] == ["local"]

    missing = predict_slide(project, str(slides[1]), "--out", f"{s3_bucket}-missing/here")
    expected = f"error: {s3_bucket}-missing/here: cannot write the outputs here (The specified bucket does not exist)"
    assert missing.returncode == 1 and missing.stderr.strip() == expected
    with fsspec.open(f"{out}/slides.csv", "w") as f:
        f.write("not,a,summary\n")
    damaged = predict_slide(project, str(slides[1]), "--out", out)
    assert damaged.returncode == 1
    assert damaged.stderr.strip().startswith(f"error: {out}/slides.csv: not a summary this command wrote")
    assert not files(out, f"{slides[1].stem}*")


def test_a_slide_failing_on_a_worker_is_one_line_naming_it_and_the_others_are_summarised(
    project: Path, slides: list[Path], cluster: Cluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(slides[0].read_bytes())
    truncate_level_0(bad)
    out = tmp_path / "out"
    result = predict_slide(project, str(bad), str(slides[1]), "--out", str(out), "--scheduler", cluster.address)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {bad.resolve()}: level 0 is unreadable at x=")
    assert sorted(summary(out)) == [slides[1].stem]


def truncate_level_0(path: Path) -> None:
    """Junk over the last tile of the slide's level 0, which only segmenting reads."""
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[0].pages[0]
        offset, length = page.dataoffsets[-1], page.databytecounts[-1]
    content = bytearray(path.read_bytes())
    content[offset + 2 : offset + length] = b"\xff" * (length - 2)
    path.write_bytes(bytes(content))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "0"), "error: --workers 0: the number of worker processes must be 1 or more"),
        (("--scheduler", "tcp://127.0.0.1:{port}"), "error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"),
    ],
    ids=["no-workers", "unreachable"],
)
def test_a_bad_cluster_argument_is_one_line(
    project: Path, slides: list[Path], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    port = free_port()
    args = tuple(arg.format(port=port) for arg in args)
    result = predict_slide(project, str(slides[0]), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(message.format(port=port))
    assert not (tmp_path / "out" / "slides.csv").exists()
