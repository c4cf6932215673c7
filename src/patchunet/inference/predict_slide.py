"""`patchunet predict-slide`: segment whole slides, tile by tile, into files QuPath and pandas read.

For each SLIDE it writes, into --out: <stem>_nuclei.geojson (a FeatureCollection of the nuclei as
QuPath detections, polygons in level-0 pixels, with their measurements), <stem>_nuclei.csv (the
nucleus table `predict` writes, one row per nucleus: id, centroid, box, area, perimeter,
eccentricity, mean intensity and probability, in level-0 pixels), <stem>_overview.png (a
thumbnail with the tissue outlined in green and the nuclei in yellow) and <stem>_labels.ome.tif
(the nuclei's ids over the pixels of the level read, a pyramidal OME-TIFF; not with
--no-label-image); slides.csv gets one row per slide (size, level, tiles, tissue, nuclei, time,
and the Dask worker that did it, or `local`).
Outputs already in --out are never replaced without --overwrite.

How: tissue is found on a thumbnail, and only tiles holding some are segmented, at the slide level
nearest the model's scale (from the slide's mpp, else --mpp; a slide with neither is refused).
Tiles (params.yaml `slide`) are read with a margin of context and segmented as `patchunet predict`
segments an image (the `eval` section); a nucleus belongs to the tile holding its centroid, whole
(postprocess/stitching.py). Memory holds one tile and the nuclei of two tile rows, whatever the slide
size. Each finished tile is saved in <stem>_tiles/ in --out, so an interrupted run, started again,
resumes after its last finished tile; the folder is removed once the slide's outputs are written.

With --workers N, N slides are segmented at a time by a Dask cluster of N processes started here;
with --scheduler, by the workers of a running Dask cluster, which must all reach the slides and
--out at the same paths. A worker lost mid-slide costs only its unfinished tiles: Dask gives the
slide to another worker, which resumes it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from patchunet.inference.slide.writers import LABELS_SUFFIX, OUTPUT_SUFFIXES

if TYPE_CHECKING:
    from patchunet.core.config import EvalConfig, SlideConfig
    from patchunet.inference.runtimes import Network
    from patchunet.inference.slide.plan import TilePlan
    from patchunet.io.slides import Slide

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
    "worker",
)
SUMMARY_COLUMNS_BEFORE_WORKER = SUMMARY_COLUMNS[:-1]
TILES_SUFFIX = "_tiles"


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
    parser.add_argument(
        "--no-label-image", action="store_true", help="do not write <stem>_labels.ome.tif, the nuclei's label image"
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="send the slides to the Dask cluster at ADDRESS (tcp://HOST:8786); its workers must share --out",
    )
    cluster.add_argument(
        "--workers", type=int, metavar="N", help="segment N slides at a time, on a Dask cluster of N processes here"
    )


def run(args: argparse.Namespace) -> None:
    from patchunet.io.scale import parse_mpp

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # zarr's pending reads, when a slide is refused
    logging.getLogger("distributed").setLevel(logging.ERROR)  # a cluster's routine news, around the one-line error
    given_mpp = parse_mpp(args.mpp, "--mpp") if args.mpp is not None else None

    from patchunet import tracking
    from patchunet.core.config import EvalConfig, MlflowConfig, PatchConfig, SlideConfig, load_params, parse_section
    from patchunet.core.errors import PatchUNetError
    from patchunet.inference.predict import (
        check_writable_folder,
        load_model_reference,
        read_summary,
        refuse_existing_outputs,
    )
    from patchunet.inference.slide.cohort import SlideJob, segment_here, segment_on_dask
    from patchunet.inference.slide.plan import slide_scale
    from patchunet.io.slides import open_slide

    if args.workers is not None and args.workers < 1:
        raise PatchUNetError(f"--workers {args.workers}: the number of worker processes must be 1 or more")
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
        skipped = {LABELS_SUFFIX} if args.no_label_image else set()
        suffixes = tuple(suffix for suffix in OUTPUT_SUFFIXES if suffix not in skipped)
        refuse_existing_outputs(args.out, stems, suffixes)
    summary_path = args.out / SUMMARY_FILE
    earlier = read_summary(summary_path, (SUMMARY_COLUMNS, SUMMARY_COLUMNS_BEFORE_WORKER))
    summary = [row for row in earlier if Path(row["slide"]).stem not in stems]
    uri = tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    size = parse_section(PatchConfig, params, "patch").size
    job = SlideJob(args.model, uri, cfg, slide_cfg, size, args.out, given_mpp, not args.no_label_image)
    if args.scheduler is None and args.workers is None:
        segment_here(args.slides, job, summary, summary_path)
        return
    load_model_reference(args.model, uri)  # a wrong --model told here, once, not by every worker
    segment_on_dask(args.slides, job, summary, summary_path, scheduler=args.scheduler, workers=args.workers)


def segment_slide(
    slide: Slide,
    mpp: float,
    network: Network,
    cfg: EvalConfig,
    window: int,
    slide_cfg: SlideConfig,
    out: Path,
    identity: dict,
    *,
    label_image: bool = True,
) -> dict:
    """Segment one slide's tissue tiles (resuming from finished ones), write its outputs (the label
    image only with `label_image`), and return its summary row."""
    from tqdm import tqdm

    from patchunet.core.files import file_sha256
    from patchunet.inference.slide.label_image import write_label_image
    from patchunet.inference.slide.plan import plan_tiles
    from patchunet.inference.slide.tile_store import TileStore
    from patchunet.inference.slide.tiles import TileContext, segment_missing_tiles
    from patchunet.inference.slide.writers import StreamedOutputs
    from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS

    started = time.perf_counter()
    stem = slide.path.stem
    plan = plan_tiles(slide, mpp, network.cfg.microns_per_pixel, slide_cfg)
    made_by = {
        **identity,
        "slide": str(slide.path.resolve()),
        "sha256": file_sha256(slide.path),
        "level": plan.level,
        "mpp": mpp,
        "nucleus_columns": list(NUCLEUS_COLUMNS),  # tiles saved with another table are redone
    }
    store = TileStore(out / f"{stem}{TILES_SUFFIX}", made_by)
    finished = store.count(plan.tissue_tiles)
    if finished:
        tqdm.write(f"{slide.path}: resuming, {finished} of {len(plan.tissue_tiles)} tissue tiles already done")
    context = TileContext(slide, plan, network, cfg, window, slide_cfg.tile_margin, slide_cfg.skip_glass)
    with StreamedOutputs(out, stem, plan, store) as outputs:
        segment_missing_tiles(context, plan.tissue_tiles, store, stem, outputs.add)
        if label_image:
            write_label_image(out / f"{stem}{LABELS_SUFFIX}", plan, slide_cfg.tile_margin, store)
        nuclei, dropped = outputs.result()
    store.remove()
    seconds = time.perf_counter() - started
    tissue_mp = plan.tissue_megapixels
    tqdm.write(
        f"{slide.path}: {nuclei} nuclei in {len(plan.tissue_tiles)} of {len(plan.tiles)} tiles ({tissue_mp:.1f} MP of "
        f"tissue, {tissue_mp / seconds:.2f} MP/s) -> {out / (stem + OUTPUT_SUFFIXES[0])}"
    )
    return summary_row(slide, plan, mpp, nuclei, dropped, seconds)


def summary_row(slide: Slide, plan: TilePlan, mpp: float, nuclei: int, dropped: dict[str, int], seconds: float) -> dict:
    """The slide's row of slides.csv (SUMMARY_COLUMNS but `scale_from`)."""
    tissue_mp = plan.tissue_megapixels
    return {
        "slide": str(slide.path),
        "width": slide.level_dimensions[0][0],
        "height": slide.level_dimensions[0][1],
        "level": plan.level,
        "microns_per_pixel": mpp,
        "tiles": len(plan.tiles),
        "tissue_tiles": len(plan.tissue_tiles),
        "tissue_megapixels": round(tissue_mp, 2),
        "nuclei": nuclei,
        "duplicates_dropped": dropped["duplicates"],
        "cut_dropped": dropped["cut"],
        "seconds": round(seconds, 1),
        "tissue_megapixels_per_second": round(tissue_mp / seconds, 3),
    }
