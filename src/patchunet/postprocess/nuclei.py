"""The nucleus table: one row per nucleus, with the same columns wherever nuclei come out.

`patchunet predict` writes it as <stem>_nuclei.csv, `patchunet predict-slide` as <stem>_nuclei.csv
and as the measurements of its GeoJSON detections, and the served model returns it as `nuclei`.
Pixels are those of the image given, or level-0 pixels of a slide (whatever level was segmented);
positions are pixel indices, the centre of pixel (row r, column c) being (x, y) = (c, r), so add
0.5 for QuPath's and GeoJSON's pixel-corner coordinates. The µm columns, `mean_intensity` and
`mean_probability` are blank ("") where there is no scale, image or probabilities to measure them.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from skimage.measure import regionprops_table


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the nucleus table."""

    name: str
    type: str
    """"int" or "float"."""
    unit: str
    description: str


NUCLEUS_TABLE = (
    Column(
        "nucleus",
        "int",
        "",
        "id: the nucleus's value in the label map (predict, served model); 1..N in tile order for a slide",
    ),
    Column("centroid_x", "float", "px", "centroid, column (1 decimal)"),
    Column("centroid_y", "float", "px", "centroid, row (1 decimal)"),
    Column("bbox_min_x", "int", "px", "bounding box: first column"),
    Column("bbox_min_y", "int", "px", "bounding box: first row"),
    Column("bbox_max_x", "int", "px", "bounding box: one past the last column, as numpy slices take it"),
    Column("bbox_max_y", "int", "px", "bounding box: one past the last row"),
    Column("area_px", "int", "px²", "pixels of the nucleus"),
    Column("area_um2", "float", "µm²", "area at the image's scale (3 decimals)"),
    Column("perimeter_px", "float", "px", "perimeter, scikit-image's estimate along the outline (2 decimals)"),
    Column("perimeter_um", "float", "µm", "perimeter at the image's scale (3 decimals)"),
    Column(
        "eccentricity",
        "float",
        "",
        "of the ellipse with the same second moments: 0 a circle, toward 1 a line (4 decimals)",
    ),
    Column("mean_intensity", "float", "0 to 255", "mean grey level of the image under the nucleus (2 decimals)"),
    Column("mean_probability", "float", "0 to 1", "mean nucleus probability the network gave its pixels (4 decimals)"),
)
NUCLEUS_COLUMNS = tuple(column.name for column in NUCLEUS_TABLE)
PIXEL_POSITIONS = ("centroid_x", "centroid_y")
BOX_STARTS, BOX_ENDS = ("bbox_min_x", "bbox_min_y"), ("bbox_max_x", "bbox_max_y")


def nucleus_table(
    labels: np.ndarray,
    mpp: float | None = None,
    probabilities: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> list[dict]:
    """One row per nucleus of (H, W) integer `labels` (NUCLEUS_COLUMNS, in increasing id order):
    lengths and areas in µm at `mpp` µm per pixel, `mean_probability` over (H, W) float
    `probabilities` and `mean_intensity` over the (H, W, 3) uint8 RGB `image`; each blank without."""
    properties = ("label", "area", "centroid", "bbox", "perimeter", "eccentricity")
    if probabilities is not None:
        properties += ("intensity_mean",)
    table = regionprops_table(labels, intensity_image=probabilities, properties=properties)
    grey = _mean_grey(labels, image) if image is not None else {}
    rows = []
    for i, nucleus in enumerate(table["label"]):
        area, perimeter = int(table["area"][i]), float(table["perimeter"][i])
        rows.append(
            {
                "nucleus": int(nucleus),
                "centroid_x": round(float(table["centroid-1"][i]), 1),
                "centroid_y": round(float(table["centroid-0"][i]), 1),
                "bbox_min_x": int(table["bbox-1"][i]),
                "bbox_min_y": int(table["bbox-0"][i]),
                "bbox_max_x": int(table["bbox-3"][i]),
                "bbox_max_y": int(table["bbox-2"][i]),
                "area_px": area,
                "area_um2": "" if mpp is None else round(area * mpp**2, 3),
                "perimeter_px": round(perimeter, 2),
                "perimeter_um": "" if mpp is None else round(perimeter * mpp, 3),
                "eccentricity": round(float(table["eccentricity"][i]), 4),
                "mean_intensity": grey.get(int(nucleus), ""),
                "mean_probability": "" if probabilities is None else round(float(table["intensity_mean"][i]), 4),
            }
        )
    return rows


def _mean_grey(labels: np.ndarray, image: np.ndarray) -> dict[int, float]:
    """By id, the mean grey level (0 black to 255 white) of the (H, W, 3) uint8 `image` under each nucleus."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    table = regionprops_table(labels, intensity_image=grey, properties=("label", "intensity_mean"))
    means = zip(table["label"], table["intensity_mean"], strict=True)
    return {int(nucleus): round(float(mean), 2) for nucleus, mean in means}


def moved(row: dict, offset: tuple[int, int]) -> dict:
    """`row` with its positions moved by `offset` (x, y) pixels: a tile's row in the pixels of the
    level it was read from."""
    x, y = offset
    shift = {"centroid_x": x, "centroid_y": y, "bbox_min_x": x, "bbox_min_y": y, "bbox_max_x": x, "bbox_max_y": y}
    return {**row, **{name: row[name] + step for name, step in shift.items()}}


def in_finer_pixels(row: dict, factor: float) -> dict:
    """`row` in pixels `factor` times finer (a slide level's row in level-0 pixels): positions,
    lengths and areas in pixels scaled, the box widened to whole pixels; µm and the rest unchanged."""
    return {
        **row,
        **{name: round(row[name] * factor, 1) for name in PIXEL_POSITIONS},
        **{name: math.floor(row[name] * factor) for name in BOX_STARTS},
        **{name: math.ceil(row[name] * factor) for name in BOX_ENDS},
        "area_px": round(row["area_px"] * factor**2),
        "perimeter_px": round(row["perimeter_px"] * factor, 2),
    }
