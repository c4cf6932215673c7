"""One tile of a slide: read with its margin, segmented, and the nuclei its core keeps, stitched
against its earlier neighbours (postprocess/stitching.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    import numpy as np

    from patchunet.core.config import EvalConfig
    from patchunet.inference.runtimes import Network
    from patchunet.inference.slide.plan import TilePlan
    from patchunet.inference.slide.tile_store import TileLabels, TileStore
    from patchunet.io.slides import Slide
    from patchunet.postprocess.tiling import Tile


@dataclasses.dataclass(frozen=True)
class TileContext:
    """What every tile of one slide is segmented with."""

    slide: Slide
    plan: TilePlan
    network: Network
    cfg: EvalConfig
    window: int
    margin: int
    skip_glass: bool


POSTPROCESS_THREADS = 2
"""Tiles post-processed at once, in threads (scipy and scikit-image release the GIL), while the
network segments the next tile: on 2 cores the network's share is small, so post-processing sets
the pace. Each tile in flight holds its region, maps and labels (about 70 MB at 2,304 px)."""


@dataclasses.dataclass
class TileInFlight:
    """A tile whose network maps are done and whose instance labels a thread is making."""

    tile: Tile
    box: tuple[int, int, int, int]
    region: np.ndarray
    nuclei: Future[tuple[np.ndarray, np.ndarray]]


def segment_missing_tiles(
    context: TileContext,
    tiles: list[Tile],
    store: TileStore,
    name: str,
    saved: Callable[[dict], None],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Segment those of `tiles` the store does not hold yet, saving each as it is done and then
    handing it to `saved` (without its labels); a progress bar named `name` counts them all, or,
    given, `progress` is told (tiles finished, tiles in all) at the start and after each tile (a
    Dask worker's, which the client shows on its own bar).

    A bounded pipeline: the network segments tile after tile here, threads turn each tile's maps
    into instance labels, and the tiles are stitched and saved in raster order, each against its
    earlier neighbours (`stitched_tile`): the same nuclei as segmenting them one by one.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from patchunet.inference.nuclei import nuclei_from_maps, nucleus_maps

    missing = [tile for tile in tiles if not store.has(tile.row, tile.col)]
    head = context.network.cfg.instance_head
    in_flight: deque[TileInFlight] = deque()

    def save_first() -> None:
        nonlocal finished
        done = in_flight.popleft()
        labels, probabilities = done.nuclei.result()
        earlier = store.earlier_neighbours(done.tile)
        stitched = stitched_tile(context, done.tile, done.box, done.region, labels, probabilities, earlier)
        store.save(done.tile.row, done.tile.col, stitched)
        saved({key: value for key, value in stitched.items() if key != "labels"})
        finished += 1
        bar.update()
        if progress:
            progress(finished, len(tiles))

    finished = len(tiles) - len(missing)
    with (
        tqdm(total=len(tiles), initial=finished, desc=name, unit="tile", disable=progress is not None) as bar,
        ThreadPoolExecutor(POSTPROCESS_THREADS, thread_name_prefix="postprocess") as pool,
    ):
        if progress:
            progress(finished, len(tiles))
        for tile in missing:
            box, region = read_tile(context, tile)
            tissue = context.plan.tissue_in(box) if context.skip_glass else None  # the network skips the glass
            maps = nucleus_maps(context.network, region, context.cfg, context.window, context.plan.level_mpp, tissue)
            nuclei = pool.submit(nuclei_from_maps, maps, head, context.cfg, region.shape[:2])
            in_flight.append(TileInFlight(tile, box, region, nuclei))
            while len(in_flight) > POSTPROCESS_THREADS or (in_flight and in_flight[0].nuclei.done()):
                save_first()
        while in_flight:
            save_first()


def read_tile(context: TileContext, tile: Tile) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The box (x, y, width, height) `tile` is read from, its core and margin within the level, and
    its (height, width, 3) uint8 pixels."""
    from patchunet.io.slides import read_region

    box = tile.read_box(context.margin, context.plan.width, context.plan.height)
    return box, read_region(context.slide, context.plan.level, *box)


def stitched_tile(
    context: TileContext,
    tile: Tile,
    box: tuple[int, int, int, int],
    region: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    earlier: list[TileLabels],
) -> dict:
    """What the tile store saves of `tile`: the nuclei its core keeps, from its instance `labels`
    and `probabilities` over its read `box` and `region`, against the saved labels of its `earlier`
    neighbours; as GeoJSON features each with its row of the nucleus table ("row") and box
    ("bbox"), in pixels of the level read, the same nuclei as labels for the label image
    ("labels", `TileLabels`), and its stitch report."""
    from patchunet.inference.slide.tile_store import TileLabels
    from patchunet.postprocess.stitching import claimed_pixels, keep_core_nuclei

    x, y, width, height = box
    claimed = claimed_pixels([(neighbour.x, neighbour.y, neighbour.labels) for neighbour in earlier], box)
    core = (tile.x - x, tile.y - y, tile.width, tile.height)
    interior = (y > 0, y + height < context.plan.height, x > 0, x + width < context.plan.width)
    kept, report = keep_core_nuclei(labels, core, interior, claimed)
    features = nucleus_features(kept, (x, y), context.plan.level_mpp, probabilities, region)
    labels = TileLabels.cropped(kept, (x, y))  # ids 1..N in raster order, as the features
    return {"features": features, "labels": labels, "report": dataclasses.asdict(report)}


def nucleus_features(
    labels: np.ndarray,
    offset: tuple[int, int],
    mpp: float,
    probabilities: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> list[dict]:
    """The nuclei of (h, w) `labels` read at `offset` (x, y) of a level at `mpp` µm per pixel, as
    GeoJSON features in the level's pixels, each with its row of the nucleus table ("row", over
    the (h, w) `probabilities` and (h, w, 3) uint8 `image`) and its box ("bbox": min x, min y,
    max x, max y)."""
    from patchunet.io.geojson import nuclei_feature_collection
    from patchunet.postprocess.nuclei import moved, nucleus_table

    rows = {row["nucleus"]: moved(row, offset) for row in nucleus_table(labels, mpp, probabilities, image)}
    features = nuclei_feature_collection(labels, offset=offset)["features"]
    for feature in features:
        row = rows[feature["properties"]["nucleus"]]
        feature["bbox"] = [row["bbox_min_x"], row["bbox_min_y"], row["bbox_max_x"], row["bbox_max_y"]]
        feature["row"] = row
    return features
