"""A slide's outputs, streamed tile by tile from the tile store: its nuclei as GeoJSON (QuPath
detections, the nucleus table as their measurements) and as the nucleus table in CSV, both in
level-0 pixels, and an overview picture.

Nuclei are numbered 1..N in tile order; memory holds one finished tile at a time, whatever the
slide's size. Each file is written atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from patchunet.inference.slide.plan import TilePlan

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
