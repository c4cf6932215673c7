"""One tile of a slide: read with its margin, segmented, and the nuclei its core keeps, stitched
against its earlier neighbours (postprocess/stitching.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from patchunet.core.config import EvalConfig
    from patchunet.inference.runtimes import Network
    from patchunet.inference.slide.tile_store import TileStore
    from patchunet.io.slides import Slide
    from patchunet.postprocess.tiling import Tile


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


def segment_missing_tiles(context: TileContext, tiles: list[Tile], store: TileStore, name: str) -> None:
    """Segment, in raster order, those of `tiles` the store does not hold yet, saving each as it is
    done; a progress bar named `name` counts them all."""
    from tqdm import tqdm

    for tile in tqdm(tiles, desc=name, unit="tile"):
        if not store.has(tile.row, tile.col):
            store.save(tile.row, tile.col, segment_tile(context, tile, store.earlier_neighbours(tile)))
        store.forget_rows_before(tile.row - 1)


def segment_tile(context: TileContext, tile: Tile, earlier: list[dict]) -> dict:
    """What the tile store saves of `tile`: the nuclei it keeps, as GeoJSON features each with its
    row of the nucleus table ("row") and box ("bbox"), in pixels of the level read, the same nuclei
    as labels for the label image ("labels", `TileLabels`), and its stitch report. `earlier`: its
    earlier neighbours' finished tiles."""
    from patchunet.inference.nuclei import segment_nuclei
    from patchunet.inference.slide.tile_store import TileLabels
    from patchunet.io.slides import read_region
    from patchunet.postprocess.stitching import claimed_pixels, keep_core_nuclei

    x, y, width, height = tile.read_box(context.margin, context.width, context.height)
    region = read_region(context.slide, context.level, x, y, width, height)
    labels, probabilities = segment_nuclei(context.network, region, context.cfg, context.window, context.level_mpp)
    claimed = claimed_pixels([feature for done in earlier for feature in done["features"]], (x, y, width, height))
    core = (tile.x - x, tile.y - y, tile.width, tile.height)
    interior = (y > 0, y + height < context.height, x > 0, x + width < context.width)
    kept, report = keep_core_nuclei(labels, core, interior, claimed)
    features = nucleus_features(kept, (x, y), context.level_mpp, probabilities, region)
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
