"""`patchunet predict-slide` end to end on real pixels: pyramidal TIFF slides made of MoNuSeg test images.

The mosaic tiles four real test images, with glass between them, into a 2600 x 2600 slide at
0.25 µm/px; 512 px tiles put seams across every image. The model is a tiny one the tests train on
real patches: the tests assert what the tiling guarantees for any model (each nucleus is one its
tile found, whole, less only pixels another nucleus holds), never a score a given model happens to
reach; benchmarks/checks/slide_stitching.py measures a trained model's scores against `patchunet predict`.
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
import yaml
from conftest import inflate_tiff_size_tags, make_train_project, params_changed, run_cli, train_in, update_params
from scipy import ndimage

from patchunet.data.patches import PatchSet
from patchunet.io.annotations import rasterize_polygons, read_polygons
from patchunet.io.geojson import rasterize_geojson
from patchunet.io.images import read_label_image, read_rgb_image
from patchunet.io.slides import write_pyramidal_tiff
from patchunet.postprocess.tiling import tile_grid

TEST_DIR = "MoNuSegTestData"
TRAIN_DIR = "MoNuSeg 2018 Training Data"
TRAIN_IDS = ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5711-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
MOSAIC_IMAGES = 4
SIDE, GAP, TILE = 1000, 200, 512


def real_patches(real_monuseg: Path, ids: list[str]) -> PatchSet:
    """64 px patches of real training images, labelled from their XML."""
    copies = []
    for image_id in ids:
        image = read_rgb_image(real_monuseg / TRAIN_DIR / "Tissue Images" / f"{image_id}.tif")
        polygons = read_polygons(real_monuseg / TRAIN_DIR / "Annotations" / f"{image_id}.xml", image.shape[:2])
        copies.append((image_id, 0, image, rasterize_polygons(polygons, image.shape[:2])[0]))
    return PatchSet.from_images(copies, 64, 64)


@pytest.fixture(scope="module")
def model(real_monuseg: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(project, model file): a project whose params tile slides by 512 px, and its model: a tiny
    foreground model trained for three epochs on two real training images."""
    project = make_train_project(tmp_path_factory.mktemp("slide") / "project")
    update_params(project, slide={"tile_size": TILE})
    real_patches(real_monuseg, TRAIN_IDS[:2]).save(project / "data/processed/patches/train")
    real_patches(real_monuseg, TRAIN_IDS[2:]).save(project / "data/processed/patches/val")
    update_params(project, model={"instance_head": "none"}, train={"epochs": 3, "lr": 0.01, "batch_size": 16})
    train_in(project)
    return project, str(project / "models/patchunet.pt")


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
    """The mosaic's outputs folder, in slide/."""
    (project, model_file), (slide, _) = model, mosaic
    out = tmp_path_factory.mktemp("stitched")
    result = predict_slide(project, str(slide), "--model", model_file, "--out", str(out / "slide"))
    assert result.returncode == 0, result.stderr
    return out


def mosaic_pixels(slide: Path) -> np.ndarray:
    with tifffile.TiffFile(slide) as tif:
        return tif.series[0].levels[0].asarray()


def test_no_pixel_belongs_to_two_nuclei(stitched: Path, mosaic) -> None:
    side = 2 * SIDE + 3 * GAP
    report = rasterize_geojson(stitched / "slide" / "mosaic_nuclei.geojson", (side, side))[1]
    assert report.overlap_pixels == 0


def test_every_nucleus_is_one_its_tile_found_whole_less_only_pixels_another_nucleus_holds(
    model, mosaic, tmp_path: Path
) -> None:
    """The guarantee of the margin and the centroid rule, for any model: each nucleus of the slide
    is a nucleus `patchunet predict` finds on one tile's read box (the same pixels, the same
    network, every window run as predict runs them: the same labels), and lost only pixels that
    another nucleus of the slide holds, so no seam cuts a nucleus the tile saw whole. Exact: no
    tolerance. (Skipping the glass, the default, changes the maps where skipped windows blended,
    for a model that sees nuclei on glass.)"""
    (project, model_file), (slide, _) = model, mosaic
    with params_changed(project, slide={"skip_glass": False}):
        result = predict_slide(project, str(slide), "--model", model_file, "--out", str(tmp_path / "slide"))
    assert result.returncode == 0, result.stderr
    side = 2 * SIDE + 3 * GAP
    nuclei = rasterize_geojson(tmp_path / "slide" / "mosaic_nuclei.geojson", (side, side))[0]
    margin = yaml.safe_load((project / "params.yaml").read_text())["slide"]["tile_margin"]
    boxes = {(t.row, t.col): t.read_box(margin, side, side) for t in tile_grid((side, side), TILE, TILE, clip=True)}
    regions = ndimage.find_objects(nuclei)
    assert len(regions) > 0  # the check has nuclei to look at
    candidates = {number: boxes_holding(boxes, where) for number, where in enumerate(regions, start=1) if where}
    pixels = mosaic_pixels(slide)
    crops = tmp_path / "crops"
    crops.mkdir()
    for key in {key for keys in candidates.values() for key in keys}:
        x, y, w, h = boxes[key]
        tifffile.imwrite(crops / f"{key[0]:02d}_{key[1]:02d}.tif", pixels[y : y + h, x : x + w], photometric="rgb")
    images = map(str, sorted(crops.glob("*.tif")))
    alone = run_cli(project, "", "predict", *images, "--model", model_file, "--out", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr

    def found(key: tuple[int, int]) -> np.ndarray:
        return read_label_image(tmp_path / "alone" / f"{key[0]:02d}_{key[1]:02d}_labels.tif")

    unexplained = [
        number
        for number, keys in candidates.items()
        if not any(found_whole(nuclei, number, found(key), boxes[key]) for key in keys)
    ]
    assert unexplained == []


def boxes_holding(boxes: dict, where: tuple[slice, slice]) -> list[tuple[int, int]]:
    """The tiles whose read box holds the bounding box `where` (rows, columns)."""
    rows, cols = where
    return [
        key
        for key, (x, y, w, h) in boxes.items()
        if x <= cols.start and cols.stop <= x + w and y <= rows.start and rows.stop <= y + h
    ]


def found_whole(nuclei: np.ndarray, number: int, labels: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether slide nucleus `number` lies within one nucleus of a tile's `labels` (over `box`),
    whose other pixels all belong to other nuclei of the slide."""
    x, y, w, h = box
    view = nuclei[y : y + h, x : x + w]
    under = np.unique(labels[view == number])
    if len(under) != 1 or under[0] == 0:
        return False
    rest = view[(labels == under[0]) & (view != number)]
    return bool((rest > 0).all())


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


def label_levels(path: Path) -> tuple[list[np.ndarray], str]:
    """The levels of a label image, and its OME-XML."""
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels], tif.ome_metadata


def test_the_label_image_holds_the_geojsons_ids_at_the_level_read_with_its_scale(stitched: Path) -> None:
    """The GeoJSON's outlines run along pixel edges, so filled they give back exactly the label
    image's pixels: no tolerance. Its ids are the nucleus table's."""
    out = stitched / "slide"
    side = 2 * SIDE + 3 * GAP
    pyramid, xml = label_levels(out / "mosaic_labels.ome.tif")
    assert [level.shape for level in pyramid] == [(2600, 2600), (1300, 1300), (650, 650), (325, 325)]
    assert pyramid[0].dtype == np.uint32
    assert np.array_equal(pyramid[0], rasterize_geojson(out / "mosaic_nuclei.geojson", (side, side))[0])
    with (out / "mosaic_nuclei.csv").open() as f:
        ids = {int(row["nucleus"]) for row in csv.DictReader(f)}
    assert set(np.unique(pyramid[0]).tolist()) == {0, *ids}
    assert np.array_equal(pyramid[2], pyramid[0][::4, ::4])
    assert 'PhysicalSizeX="0.25" PhysicalSizeXUnit="µm" PhysicalSizeY="0.25"' in xml


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


def killed_after(project: Path, model_file: str, slide: Path, out: Path, tiles: int) -> int:
    """Run predict-slide on `slide` and kill it (SIGKILL) once `tiles` tiles are saved; returns how many were."""
    command = [sys.executable, "-m", "patchunet", "predict-slide", str(slide), "--model", model_file]
    command += ["--out", str(out), "--params", str(project / "params.yaml")]
    folder = out / f"{slide.stem}_tiles"
    with subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        try:
            deadline = time.monotonic() + 300
            while len(list(folder.glob("0*.json"))) < tiles and run.poll() is None:
                assert time.monotonic() < deadline, "no tile finished in 5 minutes"
                time.sleep(0.05)
        finally:
            run.kill()
    return len(list(folder.glob("0*.json")))


def test_another_slide_of_the_same_name_and_size_is_not_resumed(model, mosaic, tmp_path: Path) -> None:
    """The resume plan is keyed on the slide's content: a slide replaced by another of the same
    path and byte size (uncompressed tiles, the same dimensions) starts over."""
    (project, model_file), (original, _) = model, mosaic
    pixels = mosaic_pixels(original)
    slide, other = tmp_path / "mosaic.tif", tmp_path / "other.tif"
    for path, content in ((slide, pixels), (other, pixels[:, ::-1])):
        tifffile.imwrite(path, content, tile=(256, 256), photometric="rgb", resolution=(4e4, 4e4), resolutionunit=3)
    assert slide.stat().st_size == other.stat().st_size
    out = tmp_path / "out"
    assert killed_after(project, model_file, slide, out, 1) >= 1
    other.replace(slide)
    second = predict_slide(project, str(slide), "--model", model_file, "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "resuming" not in second.stdout and "starting the slide over" in second.stderr


def test_a_damaged_tile_file_is_redone_to_the_same_nuclei(model, mosaic, stitched: Path, tmp_path: Path) -> None:
    """A tile file truncated after a kill (a disk full, a copy cut short) is redone, not fatal."""
    (project, model_file), (slide, _) = model, mosaic
    out = tmp_path / "out"
    assert killed_after(project, model_file, slide, out, 4) >= 4
    damaged = sorted((out / "mosaic_tiles").glob("0*.json"))[0]
    damaged.write_bytes(damaged.read_bytes()[:20])
    second = predict_slide(project, str(slide), "--model", model_file, "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert f"{damaged}: damaged (not a finished tile's JSON); the tile is redone" in second.stderr
    assert (out / "mosaic_nuclei.geojson").read_text() == (stitched / "slide" / "mosaic_nuclei.geojson").read_text()


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
    with (tmp_path / "out" / "glass_nuclei.csv").open() as f:
        centroids = [(float(row["centroid_x"]), float(row["centroid_y"])) for row in csv.DictReader(f)]
    # Whatever the model finds, it finds only in tiles with tissue: the 3 x 3 tiles under the image.
    assert all(x < 3 * TILE and y >= 5 * TILE for x, y in centroids)


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
    # Level 1 of the 80x slide is the 40x image exactly (each 2 x 2 block averaged), cut into the
    # same tiles; the outlines, traced along pixel edges and scaled by 2, cover exactly the blocks.
    assert np.array_equal(np.repeat(np.repeat(at_40x, 2, axis=0), 2, axis=1), at_80x)
    with (tmp_path / "x80_nuclei.csv").open() as f:
        first_80x = next(csv.DictReader(f))
    assert float(first_80x["area_um2"]) == pytest.approx(int(first_80x["area_px"]) * 0.125**2, rel=1e-3)
    # The label image is at the level read, with its scale: the 80x slide's is the 40x slide's.
    (labels_80x, *_), xml_80x = label_levels(tmp_path / "x80_labels.ome.tif")
    assert np.array_equal(labels_80x, label_levels(tmp_path / "x40_labels.ome.tif")[0][0])
    assert 'PhysicalSizeX="0.25"' in xml_80x


def test_no_label_image_writes_the_other_outputs_and_keeps_an_existing_label_image(
    model, real_monuseg: Path, tmp_path: Path
) -> None:
    project, model_file = model
    image = read_rgb_image(sorted((real_monuseg / TEST_DIR).glob("*.tif"))[0])
    write_pyramidal_tiff(tmp_path / "x40.tif", image, 0.25)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x40_labels.ome.tif").write_text("mine\n")
    result = predict_slide(
        project, str(tmp_path / "x40.tif"), "--model", model_file, "--out", str(out), "--no-label-image"
    )
    assert result.returncode == 0, result.stderr
    assert (out / "x40_nuclei.geojson").is_file() and (out / "x40_nuclei.csv").is_file()
    assert (out / "x40_labels.ome.tif").read_text() == "mine\n"


def tiled(path: Path, pixels: np.ndarray, **options) -> None:
    """A plain tiled TIFF at 0.25 µm/px, of any pixel type."""
    options = {"resolution": (4e4, 4e4), "resolutionunit": 3, **options}
    tifffile.imwrite(path, pixels, tile=(256, 256), **options)


def truncated(path: Path) -> None:
    write_pyramidal_tiff(path, glass(1200, 1200), 0.25)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def inflated(path: Path) -> None:
    """A tiled TIFF whose size tags say 200000 px: 16 tiles of data where 611,524 are declared
    (reading it used to pad missing tiles for hours, with zarr's log noise)."""
    tiled(path, glass(1024, 1024))
    inflate_tiff_size_tags(path)


APERIO = "Aperio Image Library v12.0.15\n1200x1200 (256x256) RGB|AppMag = 40|MPP = abc"


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.write_bytes(b"II*\x00not a tiff at all" * 50), (), "not a slide tiffslide reads"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), (), "not a slide tiffslide reads"),
        (lambda p: write_pyramidal_tiff(p, glass(1200, 1200), None), (), "records no scale (µm per pixel): pass --mpp"),
        (lambda p: write_pyramidal_tiff(p, glass(1200, 1200), 0.25), ("--mpp", "-1"), "--mpp -1: must be a positive"),
        (lambda p: None, (), "no such slide file"),
        (lambda p: tiled(p, glass(600, 600)[..., 0]), (), "grayscale slide; expected RGB"),
        (
            lambda p: tiled(p, glass(600, 600).astype(np.uint16) * 16, photometric="rgb"),
            (),
            "uint16 pixels; expected 8-bit",
        ),
        (lambda p: tiled(p, glass(600, 600) / 255.0, photometric="rgb"), (), "float64 pixels; expected 8-bit"),
        (lambda p: tifffile.imwrite(p, glass(600, 600), tile=(256, 256), description=APERIO), (), "records no scale"),
        (
            lambda p: write_pyramidal_tiff(p, glass(1200, 1200), 0.25),
            ("--mpp", "1e-9"),
            "--mpp 1e-09: not a microscope's scale",
        ),
        (truncated, (), "is unreadable at x="),
        (lambda p: p.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000)), (), "not a slide tiffslide reads"),
        (inflated, (), "level 0 declares 200000x200000 px in 611,524 tiles but the file holds 16"),
    ],
    ids=[
        "corrupt",
        "png",
        "no-mpp",
        "bad-mpp",
        "missing",
        "grayscale",
        "16-bit",
        "float",
        "aperio-mpp-abc",
        "tiny-mpp",
        "truncated",
        "garbage",
        "200000-px-tags",
    ],
)
def test_a_bad_slide_gets_one_line_naming_it(model, tmp_path: Path, make, args, message) -> None:
    project, model_file = model
    slide = tmp_path / "bad.tif"
    make(slide)
    result = predict_slide(project, str(slide), *args, "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # exactly one line: no library warning or log noise before or after it
    assert line.startswith(f"error: {slide}: ") or line.startswith("error: --mpp")
    assert message in line
    assert not list((tmp_path / "out").glob("*"))


def test_a_slide_whose_tiles_grow_too_large_at_the_models_scale_is_told_a_tile_size(model, tmp_path: Path) -> None:
    """A 5x slide (2 µm/px) is read at level 0 and resampled 8x: a 2048 px tile would be 268
    megapixels; the fix is a smaller slide.tile_size, not cropping the slide."""
    project, model_file = model
    write_pyramidal_tiff(tmp_path / "x5.tif", glass(1200, 1200), 2.0)
    with params_changed(project, slide={"tile_size": 2048}):
        result = predict_slide(project, str(tmp_path / "x5.tif"), "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / 'x5.tif'}: at 2 µm/px a 2048 px tile becomes 16384x16384 px")
    assert line.endswith("set params.yaml slide.tile_size to 1250 or less")


def test_an_unreadable_level_gets_one_line_naming_it_and_writes_nothing(model, mosaic, tmp_path: Path) -> None:
    project, model_file = model
    slide = tmp_path / "mosaic.tif"
    shutil.copy(mosaic[0], slide)
    corrupt(slide, 0, 0, 0)  # read first, for the tissue mask
    result = predict_slide(project, str(slide), "--model", model_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {slide}: level 0 is unreadable at x=0, y=0: ")
    assert not list((tmp_path / "out").glob("mosaic_nuclei*"))


@pytest.mark.parametrize("name", ["mosaic_nuclei.csv", "mosaic_labels.ome.tif"])
def test_existing_outputs_are_kept_without_overwrite(model, mosaic, stitched: Path, tmp_path: Path, name: str) -> None:
    project, model_file = model
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("mine\n")
    result = predict_slide(project, str(mosaic[0]), "--model", model_file, "--out", str(out))
    assert result.returncode == 1
    assert f"{name}: already exists: pass --overwrite to replace it" in result.stderr
    assert (out / name).read_text() == "mine\n"
