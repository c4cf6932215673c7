"""A slide's outputs, streamed tile by tile from the tile store: its nuclei as GeoJSON (QuPath
detections, the nucleus table as their measurements) and as the nucleus table in CSV, both in
level-0 pixels, and an overview picture.

Nuclei are numbered 1..N in tile order; memory holds a few finished tiles at a time, whatever the
slide's size. Each file is written atomically. `StreamedOutputs` writes them in a thread while the
slide's later tiles are segmented, rather than after them on one core.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from patchunet.inference.slide.plan import TilePlan
    from patchunet.inference.slide.tile_store import TileStore

GEOJSON_SUFFIX, CSV_SUFFIX, OVERVIEW_SUFFIX = "_nuclei.geojson", "_nuclei.csv", "_overview.png"
LABELS_SUFFIX = "_labels.ome.tif"
"""The label image (inference/slide/label_image.py)."""
OUTPUT_SUFFIXES = (GEOJSON_SUFFIX, CSV_SUFFIX, OVERVIEW_SUFFIX, LABELS_SUFFIX)


def write_slide_outputs(out: Path, stem: str, plan: TilePlan, finished: Iterable[dict]) -> tuple[int, dict[str, int]]:
    """Write `stem`'s GeoJSON, CSV and overview into `out` from its `finished` tiles (as the tile
    store saved them, in raster order); returns the number of nuclei and those the stitching dropped."""
    from patchunet.core.files import csv_file
    from patchunet.io.geojson import feature_collection_file
    from patchunet.io.images import write_png
    from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS, in_finer_pixels

    overview = tissue_overview(plan.thumbnail, plan.tissue)
    dropped = {"duplicates": 0, "cut": 0}
    count = 0
    with (
        feature_collection_file(out / f"{stem}{GEOJSON_SUFFIX}") as add_feature,
        csv_file(out / f"{stem}{CSV_SUFFIX}", NUCLEUS_COLUMNS) as table,
    ):
        for done in finished:
            for key in dropped:
                dropped[key] += done["report"][key]
            for feature in done["features"]:
                count += 1
                row = {**in_finer_pixels(feature.pop("row"), plan.downsample), "nucleus": count}
                feature = slide_feature(feature, row, plan.downsample)
                add_feature(feature)
                table.writerow(row)
                draw_outline(overview, feature["geometry"], plan.thumbnail_scale)
    write_png(out / f"{stem}{OVERVIEW_SUFFIX}", overview)
    return count, dropped


TILES_QUEUED = 2
"""Finished tiles waiting for the writer thread at most (each holds its features: about 10 MB)."""


class SegmentationStopped(Exception):
    """The slide's segmentation failed or was interrupted: the writer thread leaves its files unwritten."""


END = object()
"""Put after the last tile by `StreamedOutputs.result`: only then are the files renamed into place."""


class StreamedOutputs:
    """`write_slide_outputs` in a thread, fed each tile as the pipeline finishes it (`add`), the
    tiles already in `store` read from it in their turn: the writing overlaps the segmentation of
    the tiles after, instead of following it with a core idle. Create it before the segmentation
    starts (it notes which tiles the store holds) and use it as a context manager. The files are
    written only by `result()`, called once every tile is added; leaving the block before, on an
    error, Ctrl-C or not, stops the thread with no file written. A count of tiles that does not
    match the store's is an error, not a hang."""

    def __init__(self, out: Path, stem: str, plan: TilePlan, store: TileStore) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        tiles = plan.tissue_tiles
        stored = [store.has(tile.row, tile.col) for tile in tiles]
        self._fresh: queue.Queue[object] = queue.Queue(TILES_QUEUED)
        self._stopped = threading.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outputs")
        ordered = self._in_order(stem, tiles, stored, store)
        self._written = self._thread.submit(write_slide_outputs, out, stem, plan, ordered)

    def _in_order(self, stem: str, tiles: list, stored: list[bool], store: TileStore) -> Iterator[dict]:
        for index, (tile, was_stored) in enumerate(zip(tiles, stored, strict=True)):
            if self._stopped.is_set():  # a resumed slide's stored tiles are not all read first
                raise SegmentationStopped
            done = store.load(tile.row, tile.col) if was_stored else self._next()
            if done is END:
                raise RuntimeError(f"{stem}: the segmentation ended after {index} of {len(tiles)} tiles")
            yield done
        if self._next() is not END:
            raise RuntimeError(f"{stem}: the segmentation gave more tiles than the slide's {len(tiles)}")

    def _next(self) -> object:
        item = self._fresh.get()
        if item is None:
            raise SegmentationStopped
        return item

    def _put(self, item: object) -> None:
        while not self._written.done():
            try:
                self._fresh.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._written.result()  # the writer failed: its error, here

    def add(self, done: dict) -> None:
        """The next tile, in raster order, of those the store did not hold (`stitched_tile`'s dict)."""
        self._put(done)

    def result(self) -> tuple[int, dict[str, int]]:
        """Finish the files, once every tile is added: `write_slide_outputs`' result."""
        self._put(END)
        return self._written.result()

    def __enter__(self) -> StreamedOutputs:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._written.done():  # left before result(): stop the writer, no file written
            self._stopped.set()
            while True:  # wake it if it waits for a tile; make room if the queue is full
                try:
                    self._fresh.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._fresh.get_nowait()
        self._thread.shutdown(wait=True)


def slide_feature(feature: dict, row: dict, downsample: float) -> dict:
    """A tile's feature as a QuPath detection of the slide: numbered as its `row`, whose numbers
    are its measurements, and its outline in level-0 pixels."""
    feature.pop("bbox")
    nucleus = row["nucleus"]
    properties = feature["properties"]
    properties.update(nucleus=nucleus, name=f"Nucleus {nucleus}")
    properties["measurements"] = {k: v for k, v in row.items() if k != "nucleus" and v != ""}
    feature["geometry"] = _scaled(feature["geometry"], downsample)
    return feature


def tissue_overview(picture: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """A copy of the (h, w, 3) uint8 thumbnail with the (h, w) bool tissue outlined in green."""
    import cv2
    import numpy as np

    from patchunet.io.drawing import GREEN

    overview = picture.copy()
    contours = cv2.findContours(tissue.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    cv2.drawContours(overview, contours, -1, GREEN, 1)
    return overview


def draw_outline(overview: np.ndarray, geometry: dict, scale: float) -> None:
    """Outline a nucleus's level-0 `geometry` in yellow on the overview (`scale`: level-0 pixels
    per overview pixel)."""
    import cv2
    import numpy as np

    from patchunet.io.drawing import YELLOW

    for polygon in _polygons(geometry):
        ring = np.round(np.asarray(polygon[0]) / scale).astype(np.int32)
        cv2.polylines(overview, [ring], True, YELLOW, 1)


def _scaled(geometry: dict, factor: float) -> dict:
    if factor == 1:
        return geometry
    polygons = [[[[x * factor, y * factor] for x, y in ring] for ring in rings] for rings in _polygons(geometry)]
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def _polygons(geometry: dict) -> list:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
