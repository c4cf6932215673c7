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
--out at the same paths, or --out on object storage (s3://BUCKET/PREFIX, through fsspec): each
slide is then worked in a local temporary folder, and its finished tiles and outputs are uploaded
whole. A worker lost mid-slide costs only its unfinished tiles: Dask gives the slide to another
worker, which resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from patchunet.inference.slide.writers import LABELS_SUFFIX, OUTPUT_SUFFIXES

if TYPE_CHECKING:
    from patchunet.core.config import EvalConfig, SlideConfig
    from patchunet.inference.runtimes import Network
    from patchunet.inference.slide.plan import TilePlan
    from patchunet.io.remote_folder import RemoteFolder
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
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the outputs, or object storage every worker reaches (s3://BUCKET/PREFIX; "
        "credentials and endpoint from the environment, as AWS_ACCESS_KEY_ID and AWS_ENDPOINT_URL)",
    )
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
    from patchunet.inference.predict import load_model_reference
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
    out = shared_output(args.out, stems, output_suffixes(not args.no_label_image), args.overwrite)
    uri = tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri)
    size = parse_section(PatchConfig, params, "patch").size
    job = SlideJob(args.model, uri, cfg, slide_cfg, size, out, given_mpp, not args.no_label_image)
    with cohort_summary(out) as (earlier, save_summary):
        summary = [row for row in earlier if Path(row["slide"]).stem not in stems]
        if args.scheduler is None and args.workers is None:
            segment_here(args.slides, job, summary, save_summary)
            return
        load_model_reference(args.model, uri)  # a wrong --model told here, once, not by every worker
        segment_on_dask(args.slides, job, summary, save_summary, scheduler=args.scheduler, workers=args.workers)


def shared_output(out: str, stems: list[str], suffixes: tuple[str, ...], overwrite: bool) -> Path | str:
    """--out, checked before any work: a folder (as a Path) or object storage (its URL) that this
    process can write into, holding none of this run's outputs unless `overwrite`."""
    from patchunet.inference.predict import check_writable_folder, refuse_existing_outputs
    from patchunet.io.remote_folder import RemoteFolder, is_url

    if not is_url(out):
        check_writable_folder(Path(out))
        if not overwrite:
            refuse_existing_outputs(Path(out), stems, suffixes)
        return Path(out)
    remote = RemoteFolder(out)
    remote.check_writable()
    if not overwrite:
        refuse_existing_outputs(remote, stems, suffixes)
    return remote.url


@contextlib.contextmanager
def cohort_summary(out: Path | str) -> Iterator[tuple[list[dict], Callable[[list[dict]], None]]]:
    """The rows of slides.csv in `out`, and what writes the run's rows back there (after each slide,
    so a later failure keeps them); on object storage through a local copy, removed after the block."""
    from patchunet.core.errors import DataError, PatchUNetError
    from patchunet.core.files import write_csv
    from patchunet.inference.predict import read_summary
    from patchunet.io.remote_folder import RemoteFolder, is_url

    accepted = (SUMMARY_COLUMNS, SUMMARY_COLUMNS_BEFORE_WORKER)
    if not is_url(out):
        path = Path(out) / SUMMARY_FILE
        yield read_summary(path, accepted), lambda rows: write_csv(path, rows, SUMMARY_COLUMNS)
        return
    remote = RemoteFolder(str(out))
    with tempfile.TemporaryDirectory(prefix="patchunet-summary-") as scratch:
        path = Path(scratch) / SUMMARY_FILE
        remote.download(SUMMARY_FILE, path)
        try:
            earlier = read_summary(path, accepted)
        except DataError as exc:
            raise PatchUNetError(f"{remote}/{SUMMARY_FILE}: {exc.problem}") from None

        def save(rows: list[dict]) -> None:
            write_csv(path, rows, SUMMARY_COLUMNS)
            remote.upload(path)

        yield earlier, save


@contextlib.contextmanager
def working_folder(out: Path | str, stem: str) -> Iterator[tuple[Path, RemoteFolder | None]]:
    """(where slide `stem`'s tiles and outputs are written, the object storage they go to or None):
    `out` itself, or for object storage a local temporary folder, removed after the block, which
    needs room for one slide's tiles and outputs (set TMPDIR to put it on a large disk)."""
    from patchunet.io.remote_folder import RemoteFolder, is_url

    if not is_url(out):
        yield Path(out), None
        return
    with tempfile.TemporaryDirectory(prefix=f"patchunet-{stem}-") as work:
        yield Path(work), RemoteFolder(str(out))


def segment_slide(
    slide: Slide,
    mpp: float,
    network: Network,
    cfg: EvalConfig,
    window: int,
    slide_cfg: SlideConfig,
    out: Path | str,
    identity: dict,
    *,
    label_image: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Segment one slide's tissue tiles (resuming from finished ones), write its outputs (the label
    image only with `label_image`), and return its summary row; `progress`, given, is told the
    tiles finished and in all instead of a progress bar (`segment_missing_tiles`)."""
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
    with working_folder(out, stem) as (work, remote):
        mirror = remote.child(f"{stem}{TILES_SUFFIX}") if remote else None
        store = TileStore(work / f"{stem}{TILES_SUFFIX}", made_by, mirror)
        finished = store.count(plan.tissue_tiles)
        if finished:
            tqdm.write(f"{slide.path}: resuming, {finished} of {len(plan.tissue_tiles)} tissue tiles already done")
        context = TileContext(slide, plan, network, cfg, window, slide_cfg.tile_margin, slide_cfg.skip_glass)
        with StreamedOutputs(work, stem, plan, store) as outputs:
            segment_missing_tiles(context, plan.tissue_tiles, store, stem, outputs.add, progress)
            if label_image:
                write_label_image(work / f"{stem}{LABELS_SUFFIX}", plan, slide_cfg.tile_margin, store)
            nuclei, dropped = outputs.result()
        if remote:  # the GeoJSON last: once it is there, the slide is done, as in a folder
            for suffix in reversed(output_suffixes(label_image)):
                remote.upload(work / f"{stem}{suffix}")
        store.remove()
    seconds = time.perf_counter() - started
    tissue_mp = plan.tissue_megapixels
    if progress is None:  # else the client says it, under its bar
        tqdm.write(
            f"{slide.path}: {nuclei} nuclei in {len(plan.tissue_tiles)} of {len(plan.tiles)} tiles "
            f"({tissue_mp:.1f} MP of tissue, {tissue_mp / seconds:.2f} MP/s) -> {out}/{stem}{OUTPUT_SUFFIXES[0]}"
        )
    return summary_row(slide, plan, mpp, nuclei, dropped, seconds)


def output_suffixes(label_image: bool) -> tuple[str, ...]:
    """What a slide's outputs are named: its stem + each of these."""
    return tuple(suffix for suffix in OUTPUT_SUFFIXES if label_image or suffix != LABELS_SUFFIX)


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
