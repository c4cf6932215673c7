"""Fixtures the tests build themselves: synthetic MoNuSeg tiles and XML, and the real data's path."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from skimage.draw import disk

from patchunet.stack import free_port  # the tests' free loopback ports, as the stack takes its own

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_DIR = "MoNuSeg 2018 Training Data"
TEST_DIR = "MoNuSegTestData"


def write_monuseg_xml(path: Path, polygons: list[list[tuple[float, float]]]) -> Path:
    """Write polygons of 1-based (X, Y) vertices as an Aperio XML, as MoNuSeg ships them."""
    regions = []
    for number, vertices in enumerate(polygons, start=1):
        rows = "\n".join(f'\t\t\t\t\t<Vertex X="{x}" Y="{y}"/>' for x, y in vertices)
        regions.append(
            f'\t\t\t<Region Id="{number}" Type="0" Zoom="5" Text="" NegativeROA="0" DisplayId="{number}">\n'
            f"\t\t\t\t<Attributes/>\n\t\t\t\t<Vertices>\n{rows}\n\t\t\t\t</Vertices>\n\t\t\t</Region>"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<Annotations MicronsPerPixel="0.252700">\n\t<Annotation Id="1" Type="4">\n\t\t<Regions>\n'
        "\t\t\t<RegionAttributeHeaders/>\n" + "\n".join(regions) + "\n\t\t</Regions>\n\t</Annotation>\n</Annotations>\n"
    )
    return path


def write_rgb_tiff(path: Path, shape: tuple[int, int] = (100, 100), seed: int = 0) -> Path:
    """A random (H, W, 3) uint8 tile, LZW-compressed like the MoNuSeg training TIFFs."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rng.integers(0, 256, (*shape, 3), dtype=np.uint8), photometric="rgb", compression="lzw")
    return path


def square(x0: float, y0: float, side: float) -> list[tuple[float, float]]:
    """A square polygon with 1-based (X, Y) corners, counter-clockwise from (x0, y0)."""
    return [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]


def nuclei_polygons(seed: int, count: int = 6, side: int = 100) -> list[list[tuple[float, float]]]:
    """Non-overlapping square 'nuclei' scattered over a side x side tile."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(16, size=count, replace=False)
    step = side // 4
    return [square(1 + (c % 4) * step + 3, 1 + (c // 4) * step + 3, step - 8) for c in cells]


@pytest.fixture
def synthetic_source(tmp_path: Path) -> Path:
    return write_synthetic_source(tmp_path / "monuseg")


def write_synthetic_source(root: Path) -> Path:
    """A tiny source in the official layout: 4 training images (2 XML, 2 instance-map only), 2 test.

    Ids carry real TCGA site codes so that organ stratification has something to work on.
    """
    train_ids = ["TCGA-A7-0001-01Z", "TCGA-A7-0002-01Z", "TCGA-B0-0003-01Z", "TCGA-B0-0004-01Z"]
    for n, image_id in enumerate(train_ids):
        write_rgb_tiff(root / TRAIN_DIR / "Tissue Images" / f"{image_id}.tif", seed=n)
        polygons = nuclei_polygons(seed=n)
        if n % 2 == 0:
            write_monuseg_xml(root / TRAIN_DIR / "Annotations" / f"{image_id}.xml", polygons)
        else:
            write_instance_map_png(root / TRAIN_DIR / "Instance Maps" / f"{image_id}.png", polygons)
    for n, image_id in enumerate(["TCGA-AC-0005-01Z", "TCGA-FG-0006-01Z"], start=10):
        write_rgb_tiff(root / TEST_DIR / f"{image_id}.tif", seed=n)
        write_monuseg_xml(root / TEST_DIR / f"{image_id}.xml", nuclei_polygons(seed=n))
    return root


def write_instance_map_png(path: Path, polygons: list[list[tuple[float, float]]], shape=(100, 100)) -> Path:
    """A uint16 PNG instance map of the polygons, made with the library's own rasteriser."""
    import imagecodecs

    from patchunet.io.annotations import rasterize_polygons

    labels, _ = rasterize_polygons([np.asarray(p, float) for p in polygons], shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(imagecodecs.png_encode(labels.astype(np.uint16)))
    return path


def write_qupath_geojson(path: Path, labels: np.ndarray) -> Path:
    """The nuclei of (H, W) `labels` as a QuPath GeoJSON export of detections."""
    from patchunet.io.geojson import nuclei_feature_collection, write_geojson

    write_geojson(path, nuclei_feature_collection(labels))
    return path


def geojson_polygon(*rings: list[tuple[float, float]]) -> dict:
    """A GeoJSON Feature of one Polygon: an exterior ring, then its holes, in 0-based pixel corners."""
    coordinates = [[list(v) for v in (*ring, ring[0])] for ring in rings]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coordinates}, "properties": {}}


USER_TEST_IDS = ["slide-b-02", "slide-c-03"]


def write_user_source(root: Path, side: int = 64) -> Path:
    """A tiny source in the generic layout: 6 tiles (PNG and TIFF), labelled by instance maps,
    GeoJSON and XML in turn, and a test.txt naming USER_TEST_IDS (with a comment and a blank line)."""
    from patchunet.io.images import write_png

    kinds = ["labels", "geojson", "xml"]
    for n, image_id in enumerate(["slide-a-01", "slide-b-02", "slide-c-03", "slide-d-04", "slide-e-05", "slide-f-06"]):
        image, labels = nuclei_tile(side, seed=n)
        if n % 2:
            write_png(root / "images" / f"{image_id}.png", image)
        else:
            (root / "images").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / "images" / f"{image_id}.tif", image, photometric="rgb")
        kind = kinds[n % 3]
        if kind == "labels":
            import imagecodecs

            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{image_id}.png").write_bytes(imagecodecs.png_encode(labels))
        elif kind == "geojson":
            write_qupath_geojson(root / "annotations" / f"{image_id}.geojson", labels)
        else:
            write_monuseg_xml(root / "annotations" / f"{image_id}.xml", square_polygons(labels))
    (root / "test.txt").write_text("# held out for the final score\n" + "\n".join(USER_TEST_IDS) + "\n\n")
    return root


def nuclei_tile(side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A light (side, side, 3) uint8 tile with 6 dark square 'nuclei', and its (side, side) uint16 labels."""
    from patchunet.io.annotations import rasterize_polygons

    labels, _ = rasterize_polygons([np.asarray(p, float) for p in nuclei_polygons(seed, side=side)], (side, side))
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 220, np.uint8)
    image[labels > 0] = (70, 40, 120)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, labels.astype(np.uint16)


def square_polygons(labels: np.ndarray) -> list[list[tuple[float, float]]]:
    """The 1-based XML polygons of square nuclei, one per id of `labels`, that rasterise back to them."""
    polygons = []
    for nucleus in range(1, int(labels.max()) + 1):
        rows, cols = np.nonzero(labels == nucleus)
        polygons.append(square(cols.min() + 1, rows.min() + 1, cols.max() - cols.min()))
    return polygons


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: undo it after each test, so a
    later test's subprocesses (dvc repro, stage scripts) never log into an earlier test's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX exports the tests make (inference/runtimes.py) go to a folder of this session, not
    the user's ~/.cache; subprocesses inherit it."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def real_monuseg() -> Path:
    """The real MoNuSeg copy: MONUSEG_DIR, else ../shared/monuseg beside the repo."""
    root = Path(os.environ.get("MONUSEG_DIR") or REPO_ROOT.parent / "shared" / "monuseg")
    if not (root / TRAIN_DIR).is_dir():
        pytest.skip(f"real MoNuSeg data not found at {root}: set MONUSEG_DIR to run the real-data tests")
    return root


def make_stage_project(project: Path) -> Path:
    """An empty working folder with the repo's params.yaml, where pipelines/*.py can run."""
    project.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "params.yaml", project / "params.yaml")
    return project


@pytest.fixture
def stage_project(tmp_path: Path) -> Path:
    return make_stage_project(tmp_path / "project")


def disc_patches(count: int, size: int = 32, seed: int = 0):
    """A PatchSet of light tiles with dark 'nuclei' discs: easy enough to learn in two epochs."""
    from skimage.draw import disk

    from patchunet.data.patches import PatchSet

    rng = np.random.default_rng(seed)
    images = np.full((count, size, size, 3), 220, np.uint8)
    labels = np.zeros((count, size, size), np.uint16)
    for n in range(count):
        for nucleus in range(1, 4):
            rows, cols = disk(rng.integers(4, size - 4, 2), rng.integers(3, 6), shape=(size, size))
            images[n, rows, cols] = (70, 40, 120)
            labels[n, rows, cols] = nucleus
    images = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    index = [{"patch": n, "image_id": f"synthetic-{n // 4}", "copy": 0, "y": 0, "x": 0} for n in range(count)]
    return PatchSet(images, labels, index)


TINY_ENGINE = {"precision": "fp32", "schedule": "plateau", "select_by": "val_dice", "max_minutes": None}
"""The train settings tiny projects pin, whatever params.yaml's default: exact fp32 weights for the
bit-identity checks, epochs instead of minutes, and patch Dice (their 32 px patches make no whole
images for val AJI). Tests of bf16, the cosine plan and val AJI selection set them explicitly."""


def make_train_project(project: Path) -> Path:
    """A project with a tiny synthetic patch set and params for a 2-epoch, 2-level PatchUNet."""
    make_stage_project(project)
    disc_patches(16, seed=1).save(project / "data/processed/patches/train")
    disc_patches(8, seed=2).save(project / "data/processed/patches/val")
    train = {"epochs": 2, "lr": 0.01, "num_workers": 0, **TINY_ENGINE}
    update_params(project, model={"base_channels": 8, "depth": 2}, train=train)
    return project


def update_params(project: Path, **sections: dict) -> dict:
    """Merge {key: value} updates into sections of project/params.yaml; returns the params before."""
    path = project / "params.yaml"
    before = yaml.safe_load(path.read_text())
    after = copy.deepcopy(before)
    for section, values in sections.items():
        after[section].update(values)
    path.write_text(yaml.safe_dump(after))
    return before


@contextlib.contextmanager
def params_changed(project: Path, **sections: dict) -> Iterator[None]:
    """`update_params` for the length of a block, then params.yaml as it was."""
    before = update_params(project, **sections)
    try:
        yield
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(before))


@pytest.fixture
def train_project(tmp_path: Path) -> Path:
    return make_train_project(tmp_path / "project")


def run_pipeline(project: Path, stage: str, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    """Run pipelines/<stage>.py in `project`, as `dvc repro` would, against `tracking_uri`."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py"), *args],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_in_process(stage: str, project: Path, tracking_uri: str = "", **options: object):
    """patchunet.stages.<stage>.run on `project` and its params.yaml, in this process; returns its summary.

    As when the stage script runs in `project`: MLflow's store is `tracking_uri` (when given) and
    its artifacts go to project/mlartifacts, the store's root (DVC_ROOT, as under a queued experiment).
    """
    import importlib

    from patchunet.core.config import load_params

    stage_module = importlib.import_module(f"patchunet.stages.{stage}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DVC_ROOT", str(project))
        if tracking_uri:
            env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        return stage_module.run(load_params(project / "params.yaml"), project, **options)


DATA_STAGES = ("fetch", "masks", "split", "patches")


def run_data_stages(project: Path, source: Path) -> None:
    """fetch (from `source`), masks, split and patches on `project`, in this process."""
    for stage in DATA_STAGES:
        run_in_process(stage, project, **({"source": str(source)} if stage == "fetch" else {}))


def run_cli(project: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    """`patchunet ARGS` in `project` with its params.yaml, against `tracking_uri`."""
    return subprocess.run(
        [sys.executable, "-m", "patchunet", *args, "--params", str(project / "params.yaml")],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        timeout=600,
    )


def mlflow_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def train_in(project: Path) -> tuple[Path, str]:
    """Run the train stage in `project` with a SQLite store beside it; returns (project, uri)."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    run_in_process("train", project, uri)
    return project, uri


TEST_IDS = ["TCGA-AC-0005-01Z", "TCGA-FG-0006-01Z", "TCGA-HE-0007-01Z"]


def write_synthetic_test_set(project: Path) -> None:
    """Tiles that look like the training discs (dark nuclei on light glass), with their labels."""
    from patchunet.io.annotations import rasterize_polygons
    from patchunet.io.images import write_label_tiff

    rng = np.random.default_rng(5)
    for n, image_id in enumerate(TEST_IDS):
        polygons = nuclei_polygons(seed=20 + n)
        labels, _ = rasterize_polygons([np.asarray(p, float) for p in polygons], (100, 100))
        image = np.full((100, 100, 3), 220, np.uint8)
        image[labels > 0] = (70, 40, 120)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(project / f"data/raw/monuseg/test/images/{image_id}.tif", image, photometric="rgb")
        write_monuseg_xml(project / f"data/raw/monuseg/test/annotations/{image_id}.xml", polygons)
        write_label_tiff(project / f"data/interim/test/labels/{image_id}.tif", labels)


def make_evaluation_project(project: Path) -> tuple[Path, str]:
    """A trained tiny model (version 1 in a SQLite store beside it) and three synthetic test tiles."""
    return train_in(make_untrained_evaluation_project(project))


def make_untrained_evaluation_project(project: Path) -> Path:
    """`make_evaluation_project` before its training: the patches, params and three synthetic test tiles."""
    make_train_project(project)
    (project / "data/raw/monuseg/test/images").mkdir(parents=True)
    write_synthetic_test_set(project)
    update_params(project, eval={"window": 32, "overlap": 8, "samples": 2, "min_nucleus_area": 8, "threshold": 0.5})
    # a foreground-only model finds the synthetic nuclei after 2 tiny epochs, an instance head's loss slows
    # that start; the heads run through evaluate in test_dvc_pipeline (a real repro at the default head)
    update_params(project, model={"instance_head": "none"})
    return project


def evaluate_and_register(project: Path, uri: str) -> None:
    for stage in ("evaluate", "register"):
        run_in_process(stage, project, uri)


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(project, uri): versions 1 and 2 of `patchunet`, both evaluated, registered and given aliases.

    Also a 2-trial Optuna study in the same store. Shared by the dashboard tests, in the app and in
    the browser."""
    project, uri = make_evaluation_project(tmp_path_factory.mktemp("two-versions") / "project")
    evaluate_and_register(project, uri)
    update_params(project, train={"lr": 0.003})
    train_in(project)
    evaluate_and_register(project, uri)
    add_tune_data(project, n_trials=2, epochs_per_trial=1)
    result = run_pipeline(project, "tune", uri)  # a real study, for the Studies page
    assert result.returncode == 0, result.stderr
    return project, uri


def wait_for_http(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Return once `url` answers; raise with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered:\n{log.read_text()}") from None
            time.sleep(0.5)


TRAIN_IDS = ["TCGA-A7-0001-01Z", "TCGA-A7-0002-01Z", "TCGA-B0-0003-01Z", "TCGA-B0-0004-01Z"]
VAL_IDS = ["TCGA-A7-0005-01Z", "TCGA-B0-0006-01Z"]


def write_disc_image(project: Path, image_id: str, seed: int, side: int = 64) -> None:
    """A light tile with dark disc nuclei, and its label map, in the project's data layout."""
    from skimage.draw import disk

    from patchunet.io.images import write_label_tiff

    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 220, np.uint8)
    labels = np.zeros((side, side), np.uint16)
    for nucleus in range(1, 7):
        rows, cols = disk(rng.integers(6, side - 6, 2), rng.integers(3, 6), shape=(side, side))
        image[rows, cols] = (70, 40, 120)
        labels[rows, cols] = nucleus
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    (project / "data/raw/monuseg/train/images").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(project / f"data/raw/monuseg/train/images/{image_id}.tif", image, photometric="rgb")
    write_label_tiff(project / f"data/interim/train/labels/{image_id}.tif", labels)


def make_tune_project(project: Path, **tune: object) -> Path:
    """A project with six tiny training images, their split, and a 3-trial study over lr and 16/32 px."""
    make_stage_project(project)
    add_tune_data(project, **tune)
    return project


def add_tune_data(project: Path, **tune: object) -> None:
    for n, image_id in enumerate(TRAIN_IDS + VAL_IDS):
        write_disc_image(project, image_id, seed=n)
    (project / "data/interim/split.json").write_text(json.dumps({"train": TRAIN_IDS, "val": VAL_IDS, "test": []}))
    space = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}, "patch.size": {"choices": [16, 32]}}
    update_params(
        project,
        model={"base_channels": 8, "depth": 2},
        train={"batch_size": 4, "num_workers": 0, "online_augment": False},
        augment={"copies": 0},
        tune={"n_trials": 3, "epochs_per_trial": 2, "space": space, **tune},
    )


class RunsCodeWhenUnpickled:
    """What a malicious .pt can hold: unpickling it calls Path.touch(marker)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (self.marker,)


def write_code_running_file(path, marker, key: str = "state_dict"):
    """A torch.save file shaped like a model file whose `key` entry runs code when unpickled."""
    import torch

    torch.save({"model_config": {"base_channels": 8, "depth": 2}, key: RunsCodeWhenUnpickled(marker)}, path)
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3-protocol server alone on loopback, for the session: yields the environment that points
    boto3 and s3fs at it (any credentials pass). Stopped however the session ends."""
    from patchunet import stack

    log = tmp_path_factory.mktemp("s3") / "s3.log"
    port = free_port()
    pid = stack.spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    try:
        stack.wait_for(f"http://127.0.0.1:{port}/moto-api/", pid, log)
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
    finally:
        stack.stop_process_group(pid)


@pytest.fixture
def s3_bucket(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new empty bucket on the session's S3 server, as s3://NAME, with this process's environment
    pointing at the server for the test (s3fs's cached connections, made with another, dropped)."""
    import uuid

    import s3fs

    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def team_stack() -> Iterator:
    """`patchunet stack`'s real servers for the session: PostgreSQL, the S3 server, `mlflow server`.

    Skips only where PostgreSQL is not installed (`.ci/run` installs it); stopped however the session ends.
    """
    from patchunet import stack
    from patchunet.core.errors import PatchUNetError

    try:
        stack.postgres_bin("initdb")
    except PatchUNetError as exc:
        pytest.skip(str(exc))
    with stack.running() as running:
        yield running


def wait_gone(processes: list, timeout: float) -> list:
    """The `psutil.Process`es still running after up to `timeout` s, reaping this process's own
    children (their `returncode` set). A zombie counts as gone: it runs nothing, and whether an init
    reaps orphans is the machine's business, not the code under test's."""
    import psutil

    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while True:
        _, alive = psutil.wait_procs(processes, timeout=0.5)
        processes = [process for process in alive if running(process)]
        if not processes or time.monotonic() > deadline:
            return processes


def inflate_tiff_size_tags(path: Path) -> Path:
    """Patch a TIFF's width and length tags to 200000 px, its tiles untouched: a file whose first
    level declares far more tiles than it holds (as a hostile or damaged file may)."""
    import struct

    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<HII", data, entry + 2, 4, 1, 200_000)  # LONG, count 1
    path.write_bytes(bytes(data))
    return path


def touching_pair() -> np.ndarray:
    """Two touching discs (ids 1 and 2) and a small one (id 5) apart, in a 60x90 map."""
    labels = np.zeros((60, 90), np.uint16)
    labels[disk((30, 25), 12, shape=labels.shape)] = 1
    labels[disk((30, 47), 12, shape=labels.shape)] = 2  # overwrites the overlap: they share a border
    labels[disk((10, 80), 4, shape=labels.shape)] = 5
    return labels


def random_ellipse(rng, shape: tuple[int, int]):
    """(H, W) float map of a random rotated ellipse that may cross the border: <= 1 inside it,
    smaller towards its centre (so `<= t` with t < 1 is a concentric inner ellipse)."""
    import numpy as np

    rows, cols = np.ogrid[: shape[0], : shape[1]]
    centre = rng.uniform(-5, shape[0] + 5), rng.uniform(-5, shape[1] + 5)
    radii = rng.uniform(1, 14, size=2)
    angle = rng.uniform(0, np.pi)
    dy, dx = rows - centre[0], cols - centre[1]
    u, v = dy * np.cos(angle) + dx * np.sin(angle), -dy * np.sin(angle) + dx * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2


def tiny_network():
    """A PatchUNet of a few thousand weights, foreground only, seeded: logs and registers in seconds."""
    import torch

    from patchunet.core.config import ModelConfig
    from patchunet.model.unet import PatchUNet

    torch.manual_seed(0)
    return PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    ).eval()


def connect_to_new_store(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Work in `folder` with a new SQLite MLflow store there; returns its URI."""
    from patchunet import tracking

    monkeypatch.chdir(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.connect(uri)
    return uri
