"""`patchunet predict-slide`: segment whole slides, tile by tile, into files QuPath and pandas read.

For each SLIDE it writes, into --out: <stem>_nuclei.geojson (a FeatureCollection of the nuclei as
QuPath detections, polygons in level-0 pixels, with their measurements), <stem>_nuclei.csv (one row
per nucleus: id, centroid, area in pixels and µm², perimeter, eccentricity, mean intensity, mean
probability) and <stem>_overview.png (a thumbnail with the tissue outlined in green and the nuclei
in yellow); slides.csv gets one row per slide (size, level, tiles, tissue, nuclei, time). Outputs
already in --out are never replaced without --overwrite.

How: tissue is found on a thumbnail, and only tiles holding some are segmented, at the slide level
nearest the model's scale (from the slide's mpp, else --mpp; a slide with neither is refused).
Tiles (params.yaml `slide`) are read with a margin of context and segmented as `patchunet predict`
segments an image (the `eval` section); a nucleus belongs to the tile holding its centroid, whole
(postprocess/stitching.py). Memory holds one tile and the nuclei of two tile rows, whatever the slide
size. Each finished tile is saved in <stem>_tiles/ in --out, so an interrupted run, started again,
resumes after its last finished tile; the folder is removed once the slide's outputs are written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchunet.core.files import file_sha256

if TYPE_CHECKING:
    import numpy as np

    from patchunet.core.config import EvalConfig, SlideConfig
    from patchunet.inference.runtimes import Network
    from patchunet.io.slides import Slide
    from patchunet.postprocess.tiling import Tile

OUTPUT_SUFFIXES = ("_nuclei.geojson", "_nuclei.csv", "_overview.png")
SUMMARY_FILE = "slides.csv"
SUMMARY_COLUMNS = (
    "slide",
    "width",
    "height",
    "level",
    "microns_per_pixel",
    "scale_from",
    "tiles",
    "tissue_tiles",
    "tissue_megapixels",
    "nuclei",
    "duplicates_dropped",
    "cut_dropped",
    "seconds",
    "tissue_megapixels_per_second",
)
NUCLEUS_COLUMNS = (
    "nucleus",
    "centroid_x",
    "centroid_y",
    "area_px",
    "area_um2",
    "perimeter_px",
    "perimeter_um",
    "eccentricity",
    "mean_intensity",
    "mean_probability",
)
"""Per nucleus, in level-0 pixels of the slide (whatever level was segmented)."""
TILES_SUFFIX = "_tiles"
PLAN_FILE = "plan.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from patchunet.inference.predict import DEFAULT_MODEL

    parser.add_argument("slides", nargs="+", type=Path, metavar="SLIDE", help="SVS, NDPI or pyramidal TIFF slides")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"a model file or an MLflow model URI (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the outputs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the eval and slide sections")
    parser.add_argument("--mpp", metavar="MPP", help="µm per level-0 pixel, for slides that record none")
    parser.add_argument("--overwrite", action="store_true", help="replace this run's outputs already in --out")


def run(args: argparse.Namespace) -> None:
    from patchunet.io.scale import parse_mpp

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # zarr's pending reads, when a slide is refused
    given_mpp = parse_mpp(args.mpp, "--mpp") if args.mpp is not None else None

    from patchunet import tracking
    from patchunet.core.config import EvalConfig, MlflowConfig, PatchConfig, SlideConfig, load_params, parse_section
    from patchunet.core.errors import PatchUNetError
    from patchunet.inference.predict import (
        check_writable_folder,
        load_model_reference,
        read_summary,
        refuse_existing_outputs,
        write_rows,
    )
    from patchunet.inference.runtimes import runtime_network, weights_hash
    from patchunet.io.slides import open_slide

    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    slide_cfg = parse_section(SlideConfig, params, "slide")
    stems = [path.stem for path in args.slides]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise PatchUNetError(f"two slides named {duplicates[0]}: their outputs would overwrite each other")
    for path in args.slides:  # every slide opened and its scale checked before any work
        with open_slide(path) as slide:
            slide_scale(slide, given_mpp)
    check_writable_folder(args.out)
    if not args.overwrite:
        refuse_existing_outputs(args.out, stems, OUTPUT_SUFFIXES)
    summary_path = args.out / SUMMARY_FILE
    summary = [row for row in read_summary(summary_path, (SUMMARY_COLUMNS,)) if Path(row["slide"]).stem not in stems]
    uri = tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    model = load_model_reference(args.model, uri)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    network = runtime_network(model, cfg)
    identity = {"model": weights_hash(model), "eval": dataclasses.asdict(cfg), "slide": dataclasses.asdict(slide_cfg)}
    for path in args.slides:
        with open_slide(path) as slide:
            mpp, source = slide_scale(slide, given_mpp)
            row = segment_slide(slide, mpp, network, cfg, window, slide_cfg, args.out, identity)
        summary.append({**row, "scale_from": source})
        write_rows(summary_path, SUMMARY_COLUMNS, summary)  # after each slide: a later failure keeps it


def slide_scale(slide: Slide, given_mpp: float | None) -> tuple[float, str]:
    """µm per level-0 pixel and where it comes from: "--mpp", else "slide"; refused without either."""
    from patchunet.core.errors import DataError, PatchUNetError
    from patchunet.io.scale import PLAUSIBLE_MPP

    if given_mpp is not None:
        if not PLAUSIBLE_MPP[0] <= given_mpp <= PLAUSIBLE_MPP[1]:
            raise PatchUNetError(
                f"--mpp {given_mpp:g}: not a microscope's scale; µm per level-0 pixel lies between "
                f"{PLAUSIBLE_MPP[0]:g} and {PLAUSIBLE_MPP[1]:g} (40x is about 0.25)"
            )
        return given_mpp, "--mpp"
    if slide.mpp is None:
        raise DataError(slide.path, "records no scale (µm per pixel): pass --mpp (40x is about 0.25)")
    return slide.mpp, "slide"


def segment_slide(
    slide: Slide,
    mpp: float,
    network: Network,
    cfg: EvalConfig,
    window: int,
    slide_cfg: SlideConfig,
    out: Path,
    identity: dict,
) -> dict:
    """Segment one slide's tissue tiles (resuming from finished ones), write its outputs, and return
    its summary row."""
    from tqdm import tqdm

    from patchunet.inference.tissue import tissue_mask
    from patchunet.io.slides import level_for_scale, thumbnail
    from patchunet.postprocess.tiling import tile_grid

    started = time.perf_counter()
    model_mpp = network.cfg.microns_per_pixel
    level = level_for_scale(slide, mpp, model_mpp)
    level_mpp = mpp * slide.level_downsamples[level]
    check_tile_scale(slide.path, slide_cfg.tile_size, level_mpp, model_mpp)
    width, height = slide.level_dimensions[level]
    picture, picture_scale = thumbnail(slide, slide_cfg.thumbnail_max_side)
    tissue = tissue_mask(picture, slide_cfg.tissue_saturation)
    tiles = tile_grid((height, width), slide_cfg.tile_size, slide_cfg.tile_size, clip=True)
    scale = slide.level_downsamples[level] / picture_scale  # thumbnail pixels per level pixel
    tissue_tiles = [tile for tile in tiles if has_tissue(tissue, tile, scale)]
    plan = {**identity, "slide": str(slide.path.resolve()), "sha256": file_sha256(slide.path), "level": level}
    plan["mpp"] = mpp
    store = TileStore(out / f"{slide.path.stem}{TILES_SUFFIX}", plan)
    finished = sum(store.has(tile.row, tile.col) for tile in tissue_tiles)
    if finished:
        tqdm.write(f"{slide.path}: resuming, {finished} of {len(tissue_tiles)} tissue tiles already done")
    context = TileContext(slide, level, level_mpp, width, height, network, cfg, window, slide_cfg.tile_margin)
    for tile in tqdm(tissue_tiles, desc=slide.path.stem, unit="tile"):
        if not store.has(tile.row, tile.col):
            store.save(tile.row, tile.col, segment_tile(context, tile, store))
        store.forget_rows_before(tile.row - 1)
    nuclei, dropped = write_outputs(out, context, tissue_tiles, store, (picture, picture_scale, tissue))
    store.remove()
    seconds = time.perf_counter() - started
    tissue_mp = float(tissue.sum()) * picture_scale**2 / 1e6
    tqdm.write(
        f"{slide.path}: {nuclei} nuclei in {len(tissue_tiles)} of {len(tiles)} tiles ({tissue_mp:.1f} MP of tissue, "
        f"{tissue_mp / seconds:.2f} MP/s) -> {out / (slide.path.stem + OUTPUT_SUFFIXES[0])}"
    )
    return {
        "slide": str(slide.path),
        "width": slide.level_dimensions[0][0],
        "height": slide.level_dimensions[0][1],
        "level": level,
        "microns_per_pixel": mpp,
        "tiles": len(tiles),
        "tissue_tiles": len(tissue_tiles),
        "tissue_megapixels": round(tissue_mp, 2),
        "nuclei": nuclei,
        "duplicates_dropped": dropped["duplicates"],
        "cut_dropped": dropped["cut"],
        "seconds": round(seconds, 1),
        "tissue_megapixels_per_second": round(tissue_mp / seconds, 3),
    }


def check_tile_scale(path: Path, tile_size: int, level_mpp: float, model_mpp: float) -> None:
    """Refuse in one line a level too far from the model's scale, or one at which a tile, resampled
    to the model's scale, exceeds MAX_IMAGE_PIXELS: the fix there is a smaller slide.tile_size."""
    from patchunet.core.errors import PatchUNetError
    from patchunet.io.images import MAX_IMAGE_PIXELS
    from patchunet.io.scale import check_scale, resampled_shape

    check_scale((1, 1), level_mpp, model_mpp, str(path))
    height, width = resampled_shape((tile_size, tile_size), level_mpp, model_mpp)
    if height * width > MAX_IMAGE_PIXELS:
        largest = math.floor(math.sqrt(MAX_IMAGE_PIXELS) * model_mpp / level_mpp)
        raise PatchUNetError(
            f"{path}: at {level_mpp:g} µm/px a {tile_size} px tile becomes {width}x{height} px at the model's "
            f"{model_mpp:g} µm/px, over {MAX_IMAGE_PIXELS / 1e6:g} megapixels; set params.yaml slide.tile_size "
            f"to {largest} or less"
        )


def has_tissue(tissue: np.ndarray, tile: Tile, scale: float) -> bool:
    """Whether any tissue pixel of the thumbnail lies under the tile's core (`scale`: thumbnail
    pixels per level pixel)."""
    rows = slice(math.floor(tile.y * scale), math.ceil((tile.y + tile.height) * scale))
    cols = slice(math.floor(tile.x * scale), math.ceil((tile.x + tile.width) * scale))
    return bool(tissue[rows, cols].any())


@dataclasses.dataclass(frozen=True)
class TileContext:
    """What every tile of one slide is segmented with."""

    slide: Slide
    level: int
    level_mpp: float
    width: int
    height: int
    network: Network
    cfg: EvalConfig
    window: int
    margin: int


def segment_tile(context: TileContext, tile: Tile, store: TileStore) -> dict:
    """The nuclei `tile` keeps, as GeoJSON features and rows in level pixels, and its stitch report."""
    from patchunet.inference.nuclei import nucleus_table, segment_nuclei, shape_features
    from patchunet.io.geojson import nuclei_feature_collection, rasterize_geojson
    from patchunet.io.slides import read_region
    from patchunet.postprocess.stitching import keep_core_nuclei

    x, y, width, height = tile.read_box(context.margin, context.width, context.height)
    region = read_region(context.slide, context.level, x, y, width, height)
    labels, probabilities = segment_nuclei(context.network, region, context.cfg, context.window, context.level_mpp)
    earlier = [feature for neighbour in store.earlier_neighbours(tile) for feature in neighbour["features"]]
    nearby = [feature for feature in earlier if _bbox_meets(feature["bbox"], (x, y, width, height))]
    claimed = rasterize_geojson(nearby, (height, width), offset=(x, y))[0]
    core = (tile.x - x, tile.y - y, tile.width, tile.height)
    interior = (y > 0, y + height < context.height, x > 0, x + width < context.width)
    kept, report = keep_core_nuclei(labels, core, interior, claimed)
    shapes = shape_features(kept, region)
    rows = {row["nucleus"]: {**row, **shapes[row["nucleus"]]} for row in nucleus_table(kept, None, probabilities)}
    features = nuclei_feature_collection(kept, offset=(x, y))["features"]
    for feature in features:
        row = rows[feature["properties"]["nucleus"]]
        feature["bbox"] = [row["bbox_min_x"] + x, row["bbox_min_y"] + y, row["bbox_max_x"] + x, row["bbox_max_y"] + y]
        feature["row"] = {**row, "centroid_x": row["centroid_x"] + x, "centroid_y": row["centroid_y"] + y}
    return {"features": features, "report": dataclasses.asdict(report)}


def _bbox_meets(bbox: list[float], box: tuple[int, int, int, int]) -> bool:
    x, y, width, height = box
    return bbox[0] < x + width and bbox[2] > x and bbox[1] < y + height and bbox[3] > y


class TileStore:
    """Finished tiles of one slide on disk (<name>.json in `folder`, written atomically), under a
    plan.json of what produced them: another plan (model, settings, slide) starts the folder over.
    Keeps in memory the tiles of the rows a later tile may still need as earlier neighbours."""

    def __init__(self, folder: Path, plan: dict) -> None:
        from patchunet.core.files import write_json

        self.folder = folder
        self.loaded: dict[tuple[int, int], dict] = {}
        plan_path = folder / PLAN_FILE
        if folder.is_dir() and _read_plan(plan_path) != json.loads(json.dumps(plan)):
            print(f"{folder}: made with other settings, model or slide; starting the slide over", file=sys.stderr)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not plan_path.is_file():
            write_json(plan_path, plan)
        for path in sorted(folder.glob("[0-9]*_[0-9]*.json")):
            if not isinstance(_read_tile(path), dict):
                print(f"{path}: damaged (not a finished tile's JSON); the tile is redone", file=sys.stderr)
                path.unlink()

    def path(self, row: int, col: int) -> Path:
        return self.folder / f"{row:04d}_{col:04d}.json"

    def has(self, row: int, col: int) -> bool:
        return row >= 0 and col >= 0 and self.path(row, col).is_file()

    def save(self, row: int, col: int, done: dict) -> None:
        from patchunet.core.files import atomic_file

        with atomic_file(self.path(row, col)) as tmp:
            tmp.write_text(json.dumps(done, separators=(",", ":")))
        self.loaded[(row, col)] = done

    def load(self, row: int, col: int) -> dict:
        if (row, col) not in self.loaded:
            self.loaded[(row, col)] = json.loads(self.path(row, col).read_text())
        return self.loaded[(row, col)]

    def earlier_neighbours(self, tile: Tile) -> list[dict]:
        """Finished tiles adjacent to `tile` and before it in raster order (the row above, and the
        left one): the same set whether the run was interrupted or not, so a resumed slide gives
        the same nuclei. Tiles without tissue were never segmented and have no file."""
        above = [(tile.row - 1, tile.col + step) for step in (-1, 0, 1)]
        return [self.load(*key) for key in (*above, (tile.row, tile.col - 1)) if self.has(*key)]

    def forget_rows_before(self, row: int) -> None:
        self.loaded = {key: done for key, done in self.loaded.items() if key[0] >= row}

    def remove(self) -> None:
        shutil.rmtree(self.folder)


def _read_tile(path: Path) -> dict | None:
    """A finished tile's file, or None where it is not one (truncated, damaged, another's)."""
    done = _read_plan(path)
    return done if isinstance(done, dict) and {"features", "report"} <= done.keys() else None


def _read_plan(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def write_outputs(
    out: Path,
    context: TileContext,
    tiles: list[Tile],
    store: TileStore,
    thumbnail: tuple[np.ndarray, float, np.ndarray],
) -> tuple[int, dict[str, int]]:
    """Stream every finished tile's nuclei into the slide's GeoJSON, CSV and overview, numbered
    1..N in tile order, in level-0 pixels; returns N and the nuclei the stitching dropped.
    `thumbnail`: the picture, level-0 pixels per picture pixel, and the tissue mask."""
    import cv2
    import numpy as np

    from patchunet.core.files import atomic_file
    from patchunet.io.drawing import GREEN, YELLOW
    from patchunet.io.images import write_png

    picture, picture_scale, tissue = thumbnail
    stem = context.slide.path.stem
    downsample = context.slide.level_downsamples[context.level]
    overview = picture.copy()
    contours = cv2.findContours(tissue.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    cv2.drawContours(overview, contours, -1, GREEN, 1)
    dropped = {"duplicates": 0, "cut": 0}
    count = 0
    with (
        atomic_file(out / f"{stem}{OUTPUT_SUFFIXES[0]}") as geojson_tmp,
        atomic_file(out / f"{stem}{OUTPUT_SUFFIXES[1]}") as csv_tmp,
        geojson_tmp.open("w") as geojson,
        csv_tmp.open("w", newline="") as table,
    ):
        writer = csv.DictWriter(table, fieldnames=NUCLEUS_COLUMNS)
        writer.writeheader()
        geojson.write('{"type":"FeatureCollection","features":[')
        for tile in tiles:
            done = store.load(tile.row, tile.col)
            for key in dropped:
                dropped[key] += done["report"][key]
            for feature in done["features"]:
                count += 1
                row = slide_row(count, feature.pop("row"), downsample, context.level_mpp)
                feature.pop("bbox")
                properties = feature["properties"]
                properties.update(nucleus=count, name=f"Nucleus {count}")
                properties["measurements"] = {k: v for k, v in row.items() if k != "nucleus" and v != ""}
                feature["geometry"] = _scaled(feature["geometry"], downsample)
                geojson.write(("," if count > 1 else "") + json.dumps(feature, separators=(",", ":")))
                writer.writerow(row)
                for polygon in _polygons(feature["geometry"]):
                    ring = np.round(np.asarray(polygon[0]) / picture_scale).astype(np.int32)
                    cv2.polylines(overview, [ring], True, YELLOW, 1)
            store.forget_rows_before(tile.row)
        geojson.write("]}\n")
    write_png(out / f"{stem}{OUTPUT_SUFFIXES[2]}", overview)
    return count, dropped


def slide_row(nucleus: int, row: dict, downsample: float, level_mpp: float) -> dict:
    """A CSV row in level-0 pixels from a tile's row in pixels of the level segmented."""
    return {
        "nucleus": nucleus,
        "centroid_x": round(row["centroid_x"] * downsample, 1),
        "centroid_y": round(row["centroid_y"] * downsample, 1),
        "area_px": round(row["area_px"] * downsample**2),
        "area_um2": round(row["area_px"] * level_mpp**2, 3),
        "perimeter_px": round(row["perimeter_px"] * downsample, 2),
        "perimeter_um": round(row["perimeter_px"] * level_mpp, 3),
        "eccentricity": row["eccentricity"],
        "mean_intensity": row["mean_intensity"],
        "mean_probability": row["mean_probability"],
    }


def _scaled(geometry: dict, factor: float) -> dict:
    if factor == 1:
        return geometry
    polygons = [[[[x * factor, y * factor] for x, y in ring] for ring in rings] for rings in _polygons(geometry)]
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def _polygons(geometry: dict) -> list:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
