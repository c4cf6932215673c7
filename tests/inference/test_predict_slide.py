"""`patchunet predict-slide` end to end on real pixels: pyramidal TIFF slides made of MoNuSeg test images.

The mosaic tiles four real test images, with glass between them, into a 2600 x 2600 slide at
0.25 µm/px; 512 px tiles put seams across every image. The model is a tiny one the tests train on
real patches, and the local trained model where one exists (models/patchunet.pt, after `dvc repro`).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO_ROOT, make_train_project, params_changed, run_cli, train_in, update_params
from scipy import ndimage

from patchunet.data.annotations import read_polygons
from patchunet.data.geojson import rasterize_geojson
from patchunet.data.images import read_label_image, read_rgb_image
from patchunet.data.masks import rasterize_polygons
from patchunet.data.patches import PatchSet
from patchunet.evaluation.metrics import score_segmentation
from patchunet.inference.slides import write_pyramidal_tiff

TEST_DIR = "MoNuSegTestData"
TRAIN_DIR = "MoNuSeg 2018 Training Data"
TRAIN_IDS = ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5711-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
MOSAIC_IMAGES = 4
SIDE, GAP, TILE = 1000, 200, 512
LOCAL_MODEL = REPO_ROOT / "models" / "patchunet.pt"


def real_patches(real_monuseg: Path, ids: list[str]) -> PatchSet:
    """64 px patches of real training images, labelled from their XML."""
    copies = []
    for image_id in ids:
        image = read_rgb_image(real_monuseg / TRAIN_DIR / "Tissue Images" / f"{image_id}.tif")
        polygons = read_polygons(real_monuseg / TRAIN_DIR / "Annotations" / f"{image_id}.xml", image.shape[:2])
        copies.append((image_id, 0, image, rasterize_polygons(polygons, image.shape[:2])[0]))
    return PatchSet.from_images(copies, 64, 64)


@pytest.fixture(scope="module", params=["tiny", "local"])
def model(
    request: pytest.FixtureRequest, real_monuseg: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """(project, model file): a project whose params tile slides by 512 px, and its model: a tiny
    foreground model trained for three epochs on two real training images, or the local one."""
    project = make_train_project(tmp_path_factory.mktemp("slide") / "project")
    update_params(project, slide={"tile_size": TILE})
    if request.param == "local":
        if not LOCAL_MODEL.is_file():
            pytest.skip(f"no trained model at {LOCAL_MODEL}: `dvc repro` makes one")
        return project, str(LOCAL_MODEL)
    real_patches(real_monuseg, TRAIN_IDS[:2]).save(project / "data/processed/patches/train")
    real_patches(real_monuseg, TRAIN_IDS[2:]).save(project / "data/processed/patches/val")
    update_params(project, model={"instance_head": "none"}, train={"epochs": 3, "lr": 0.01, "batch_size": 16})
    train_in(project)
    return project, str(project / "models/patchunet.pt")
    if not LOCAL_MODEL.is_file():
        pytest.skip(f"no trained model at {LOCAL_MODEL}: `dvc repro` makes one")
    return project, str(LOCAL_MODEL)


def glass(height: int, width: int) -> np.ndarray:
    noise = np.random.default_rng(0).integers(0, 8, (height, width, 1), dtype=np.uint8)
    return np.full((height, width, 3), 236, np.uint8) + noise


@pytest.fixture(scope="module")
def mosaic(real_monuseg: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Path, tuple[int, int]]]:
    """(slide, {test image: its (x, y) in the slide}): 2 x 2 real test images, GAP px of glass around each."""
    images = sorted((real_monuseg / TEST_DIR).glob("*.tif"))[:MOSAIC_IMAGES]
    side = 2 * SIDE + 3 * GAP
    slide = glass(side, side)
    places = {}
    for index, path in enumerate(images):
        row, col = divmod(index, 2)
        x, y = GAP + col * (SIDE + GAP), GAP + row * (SIDE + GAP)
        slide[y : y + SIDE, x : x + SIDE] = read_rgb_image(path)
        places[path] = (x, y)
    path = tmp_path_factory.mktemp("mosaic") / "mosaic.tif"
    write_pyramidal_tiff(path, slide, 0.25)
    return path, places


def predict_slide(project: Path, *args: str):
    return run_cli(project, f"sqlite:///{project / 'mlflow.db'}", "predict-slide", *args)


@pytest.fixture(scope="module")
def stitched(model, mosaic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mosaic's outputs folder, and `patchunet predict` of each embedded image alone in alone/."""
    (project, model_file), (slide, places) = model, mosaic
    out = tmp_path_factory.mktemp("stitched")
    result = predict_slide(project, str(slide), "--model", model_file, "--out", str(out / "slide"))
    assert result.returncode == 0, result.stderr
    alone = run_cli(project, "", "predict", *map(str, places), "--model", model_file, "--out", str(out / "alone"))
    assert alone.returncode == 0, alone.stderr
    return out


def test_the_stitched_slide_scores_within_0_005_aji_of_predict_per_image(stitched: Path, mosaic) -> None:
    _, places = mosaic
    geojson = stitched / "slide" / "mosaic_nuclei.geojson"
    for path, (x, y) in places.items():
        truth = rasterize_polygons(read_polygons(path.with_suffix(".xml"), (SIDE, SIDE)), (SIDE, SIDE))[0]
        alone = read_label_image(stitched / "alone" / f"{path.stem}_labels.tif")
        from_slide, report = rasterize_geojson(geojson, (SIDE, SIDE), offset=(x, y))
        assert report.overlap_pixels == 0  # no two nuclei share a pixel: none is there twice
        alone_aji = score_segmentation(truth, alone).instances.aji
        slide_aji = score_segmentation(truth, from_slide).instances.aji
        assert abs(slide_aji - alone_aji) <= 0.005, (path.stem, alone_aji, slide_aji)


def seam_crossings(alone: np.ndarray, from_slide: np.ndarray, x: int, y: int) -> tuple[int, int]:
    """(nuclei of `alone` crossing a tile seam, of those the slide has cut at it): a nucleus is cut
    where the slide's nucleus covering most of it stops at the seam instead of crossing it too."""
    seams_x = [s - x for s in range(TILE, x + SIDE, TILE) if 0 < s - x < SIDE]
    seams_y = [s - y for s in range(TILE, y + SIDE, TILE) if 0 < s - y < SIDE]
    crossing = cut = 0
    for nucleus, (rows, cols) in enumerate(ndimage.find_objects(alone), start=1):
        across = [(seam, 1) for seam in seams_x if cols.start < seam < cols.stop]
        across += [(seam, 0) for seam in seams_y if rows.start < seam < rows.stop]
        if not across:
            continue
        crossing += 1
        mask = alone[rows, cols] == nucleus
        ids, counts = np.unique(from_slide[rows, cols][mask], return_counts=True)
        main = ids[np.argmax(np.where(ids > 0, counts, -1))]
        if main == 0:
            continue
        where = np.argwhere(from_slide == main)
        for seam, axis in across:
            cut += not (where[:, axis].min() < seam <= where[:, axis].max())
    return crossing, cut


def test_no_nucleus_is_cut_at_a_tile_seam(stitched: Path, mosaic) -> None:
    _, places = mosaic
    crossing = cut = 0
    for path, (x, y) in places.items():
        alone = read_label_image(stitched / "alone" / f"{path.stem}_labels.tif")
        from_slide = rasterize_geojson(stitched / "slide" / "mosaic_nuclei.geojson", (SIDE, SIDE), offset=(x, y))[0]
        found = seam_crossings(alone, from_slide, x, y)
        crossing, cut = crossing + found[0], cut + found[1]
    assert crossing >= 20  # the check has nuclei to look at
    # A blob two tiles split into nuclei in two different ways keeps the earlier tile's nucleus and
    # the rest of the later tile's: an edge along the seam. It happens where the split is a toss-up
    # (3 of 183 seam-crossing nuclei with the trained model: benchmarks/slide_stitching.py); a tiler
    # without margins and the centroid rule would cut every one of them.
    assert cut <= 0.02 * crossing, (cut, crossing)


def test_the_outputs_are_qupath_detections_a_feature_table_an_overview_and_a_summary_row(stitched: Path) -> None:
    out = stitched / "slide"
    collection = json.loads((out / "mosaic_nuclei.geojson").read_text())
    with (out / "mosaic_nuclei.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(rows) > 0
    first = collection["features"][0]["properties"]
    assert first["objectType"] == "detection" and first["classification"]["name"] == "Nucleus"
    assert set(first["measurements"]) == set(rows[0]) - {"nucleus"}
    assert [int(row["nucleus"]) for row in rows] == list(range(1, len(rows) + 1))
    for row in rows[:50]:
        assert float(row["area_um2"]) == pytest.approx(int(row["area_px"]) * 0.25**2, abs=1e-3)
        assert 0 <= float(row["eccentricity"]) < 1 and 0 < float(row["mean_intensity"]) < 255
    assert read_rgb_image(out / "mosaic_overview.png").shape[:2] == (2048, 2048)
    with (out / "slides.csv").open() as f:
        (summary,) = csv.DictReader(f)
    assert int(summary["nuclei"]) == len(rows)
    assert (summary["level"], summary["scale_from"], summary["tiles"]) == ("0", "slide", "36")
    assert int(summary["tissue_tiles"]) < 36  # the glass border's tiles are skipped
    assert not (out / "mosaic_tiles").exists()  # the resume folder goes once the outputs are written


def tile_bytes(slide: Path, level: int, x: int, y: int) -> tuple[int, int]:
    """(offset, length) in the file of the TIFF tile holding (x, y) of `level`."""
    with tifffile.TiffFile(slide) as tif:
        page = tif.series[0].levels[level].pages[0]
        index = (y // page.tilelength) * -(-page.imagewidth // page.tilewidth) + x // page.tilewidth
        return page.dataoffsets[index], page.databytecounts[index]


def corrupt(slide: Path, level: int, x: int, y: int) -> bytes:
    """Overwrite the middle of one TIFF tile with junk; returns the bytes it replaced."""
    offset, length = tile_bytes(slide, level, x, y)
    content = bytearray(slide.read_bytes())
    before = bytes(content[offset + 2 : offset + length])
    content[offset + 2 : offset + length] = b"\xff" * (length - 2)
    slide.write_bytes(bytes(content))
    return before


def test_a_killed_run_resumes_from_its_finished_tiles_to_the_same_nuclei(
    model, mosaic, stitched: Path, tmp_path: Path
) -> None:
    """Killed (SIGKILL, as a crash or a lost machine) after some tiles, the slide resumes from them
    and gives exactly the uninterrupted run's nuclei."""
    (project, model_file), (slide, _) = model, mosaic
    out = tmp_path / "out"
    command = [sys.executable, "-m", "patchunet", "predict-slide", str(slide), "--model", model_file]
    command += ["--out", str(out), "--params", str(project / "params.yaml")]
    with subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        try:
            deadline = time.monotonic() + 300
            while len(list((out / "mosaic_tiles").glob("0*.json"))) < 8 and run.poll() is None:
                assert time.monotonic() < deadline, "no tile finished in 5 minutes"
                time.sleep(0.05)
        finally:
            run.kill()
    finished = len(list((out / "mosaic_tiles").glob("0*.json")))
    assert 8 <= finished < 25 and not (out / "mosaic_nuclei.geojson").exists()
    second = predict_slide(project, str(slide), "--model", model_file, "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert f"resuming, {finished} of 25 tissue tiles already done" in second.stdout
    assert (out / "mosaic_nuclei.geojson").read_text() == (stitched / "slide" / "mosaic_nuclei.geojson").read_text()
    assert (out / "mosaic_nuclei.csv").read_text() == (stitched / "slide" / "mosaic_nuclei.csv").read_text()


def test_a_tile_that_cannot_be_decoded_stops_the_run_in_one_line_keeping_the_tiles_before(
    model, mosaic, tmp_path: Path
) -> None:
    (project, model_file), (original, places) = model, mosaic
    slide = tmp_path / "mosaic.tif"
    shutil.copy(original, slide)
    with params_changed(project, slide={"thumbnail_max_side": 1024}):  # the thumbnail from level 1
        x, y = places[sorted(places)[-1]]  # in the last embedded image: most tiles come before it
        corrupt(slide, 0, x + 600, y + 600)
        result = predict_slide(project, str(slide), "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {slide}: level 0 is unreadable at x=") and "\n" not in line
    assert len(list((tmp_path / "out" / "mosaic_tiles").glob("0*.json"))) >= 10  # kept for a rerun
    assert not list((tmp_path / "out").glob("mosaic_nuclei*"))


def test_a_slide_of_mostly_empty_glass_segments_only_its_tissue(model, real_monuseg: Path, tmp_path: Path) -> None:
    project, model_file = model
    slide = glass(4096, 4096)
    image = sorted((real_monuseg / TEST_DIR).glob("*.tif"))[0]
    slide[3000:4000, 100:1100] = read_rgb_image(image)
    write_pyramidal_tiff(tmp_path / "glass.tif", slide, 0.25)
    result = predict_slide(project, str(tmp_path / "glass.tif"), "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    with (tmp_path / "out" / "slides.csv").open() as f:
        (summary,) = csv.DictReader(f)
    assert summary["tiles"] == "64"
    assert 4 <= int(summary["tissue_tiles"]) <= 9  # the tiles under the image: 1000 px over 512 px tiles
    assert 0.8 <= float(summary["tissue_megapixels"]) <= 1.1  # the image's 1 MP, less its palest glass-like gaps
    assert int(summary["nuclei"]) > 0


def test_a_slide_at_80x_is_read_from_the_level_at_the_models_scale_in_level_0_pixels(
    model, real_monuseg: Path, tmp_path: Path
) -> None:
    project, model_file = model
    image = read_rgb_image(sorted((real_monuseg / TEST_DIR).glob("*.tif"))[0])
    write_pyramidal_tiff(tmp_path / "x80.tif", np.repeat(np.repeat(image, 2, axis=0), 2, axis=1), 0.125)
    write_pyramidal_tiff(tmp_path / "x40.tif", image, 0.25)
    for name in ("x80", "x40"):
        result = predict_slide(project, str(tmp_path / f"{name}.tif"), "--model", model_file, "--out", str(tmp_path))
        assert result.returncode == 0, result.stderr
    with (tmp_path / "slides.csv").open() as f:
        summary = {Path(row["slide"]).stem: row for row in csv.DictReader(f)}
    assert (summary["x80"]["level"], summary["x40"]["level"]) == ("1", "0")
    at_40x = rasterize_geojson(tmp_path / "x40_nuclei.geojson", image.shape[:2])[0]
    at_80x = rasterize_geojson(tmp_path / "x80_nuclei.geojson", (2 * SIDE, 2 * SIDE))[0]
    assert score_segmentation(np.repeat(np.repeat(at_40x, 2, axis=0), 2, axis=1), at_80x).instances.aji > 0.99
    with (tmp_path / "x80_nuclei.csv").open() as f:
        first_80x = next(csv.DictReader(f))
    assert float(first_80x["area_um2"]) == pytest.approx(int(first_80x["area_px"]) * 0.125**2, rel=1e-3)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.write_bytes(b"II*\x00not a tiff at all" * 50), (), "not a slide tiffslide reads"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), (), "not a slide tiffslide reads"),
        (lambda p: write_pyramidal_tiff(p, glass(1200, 1200), None), (), "records no scale (µm per pixel): pass --mpp"),
        (lambda p: write_pyramidal_tiff(p, glass(1200, 1200), 0.25), ("--mpp", "-1"), "--mpp -1: must be a positive"),
        (lambda p: None, (), "no such slide file"),
    ],
    ids=["corrupt", "png", "no-mpp", "bad-mpp", "missing"],
)
def test_a_bad_slide_gets_one_line_naming_it(model, tmp_path: Path, make, args, message) -> None:
    project, model_file = model
    slide = tmp_path / "bad.tif"
    make(slide)
    result = predict_slide(project, str(slide), *args, "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in line
    assert not (tmp_path / "out").exists()


def test_an_unreadable_level_gets_one_line_naming_it_and_writes_nothing(model, mosaic, tmp_path: Path) -> None:
    project, model_file = model
    slide = tmp_path / "mosaic.tif"
    shutil.copy(mosaic[0], slide)
    corrupt(slide, 0, 0, 0)  # read first, for the tissue mask
    result = predict_slide(project, str(slide), "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {slide}: level 0 is unreadable at x=0, y=0: ")
    assert not list((tmp_path / "out").glob("mosaic_nuclei*"))


def test_existing_outputs_are_kept_without_overwrite(model, mosaic, stitched: Path, tmp_path: Path) -> None:
    project, model_file = model
    out = tmp_path / "out"
    out.mkdir()
    (out / "mosaic_nuclei.csv").write_text("mine\n")
    result = predict_slide(project, str(mosaic[0]), "--model", model_file, "--out", str(out))
    assert result.returncode == 1
    assert "mosaic_nuclei.csv: already exists: pass --overwrite to replace it" in result.stderr
    assert (out / "mosaic_nuclei.csv").read_text() == "mine\n"
