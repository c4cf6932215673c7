"""One tile of a slide: read with its margin, segmented, and the nuclei its core keeps, stitched
against its earlier neighbours (postprocess/stitching.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    """The nuclei `tile` keeps, as GeoJSON features and rows in level pixels, and its stitch report:
    what the tile store saves. `earlier`: its earlier neighbours' finished tiles."""
    from patchunet.inference.nuclei import nucleus_table, segment_nuclei, shape_features
    from patchunet.io.geojson import nuclei_feature_collection
    from patchunet.io.slides import read_region
    from patchunet.postprocess.stitching import claimed_pixels, keep_core_nuclei

    x, y, width, height = tile.read_box(context.margin, context.width, context.height)
    region = read_region(context.slide, context.level, x, y, width, height)
    labels, probabilities = segment_nuclei(context.network, region, context.cfg, context.window, context.level_mpp)
    claimed = claimed_pixels([feature for done in earlier for feature in done["features"]], (x, y, width, height))
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
