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
from scipy import ndimage
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
    `probabilities` and `mean_intensity` over the (H, W, 3) uint8 RGB `image`; each blank without.

    The numbers are scikit-image's regionprops' to the last digit kept, but measured for all nuclei
    at once with sums over the whole image: regionprops measures one nucleus at a time in Python.
    """
    nuclei = _Nuclei.of(labels)
    if not nuclei.ids:
        return []
    centroids = nuclei.centroids()
    perimeters = _perimeters(labels, nuclei)
    eccentricities = nuclei.eccentricities(labels)
    probability = None if probabilities is None else nuclei.means(labels, probabilities)
    grey = None if image is None else nuclei.sums(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)) / nuclei.area
    rows = []
    for i, nucleus in enumerate(nuclei.ids):
        area, perimeter, box = int(nuclei.area[i]), perimeters[i], nuclei.boxes[i]
        rows.append(
            {
                "nucleus": nucleus,
                "centroid_x": round(float(centroids[i, 1]), 1),
                "centroid_y": round(float(centroids[i, 0]), 1),
                "bbox_min_x": box[1].start,
                "bbox_min_y": box[0].start,
                "bbox_max_x": box[1].stop,
                "bbox_max_y": box[0].stop,
                "area_px": area,
                "area_um2": "" if mpp is None else round(area * mpp**2, 3),
                "perimeter_px": round(perimeter, 2),
                "perimeter_um": "" if mpp is None else round(perimeter * mpp, 3),
                "eccentricity": round(eccentricities[i], 4),
                "mean_intensity": "" if grey is None else round(float(grey[i]), 2),
                "mean_probability": "" if probability is None else round(probability[i], 4),
            }
        )
    return rows


ECCENTRICITY_MARGIN = 1e-9
"""How far regionprops' float eccentricity, squared, may be from the exact one: its moments, sums
over a nucleus's rows and columns, are off by about 1e-12."""
SUM_DEPTH = 21
"""Roundings on the way from a pixel to numpy's float sum, beyond log2 of the pixel count: its
pairwise sum adds up to 16 terms in each of 8 running sums, then adds those and the halves; the
mean divides once. Times the unit roundoff and the mean of |values|: a bound of the mean's error."""


@dataclasses.dataclass(frozen=True)
class _Nuclei:
    """The nuclei of a label image: `ids` increasing, their `boxes` (find_objects' slices) and
    `area`; and for each labelled pixel (those `inside`, in row-major order) its id and position."""

    ids: list[int]
    boxes: list[tuple[slice, slice]]
    area: np.ndarray
    inside: np.ndarray
    label: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray) -> _Nuclei:
        found = [(index + 1, box) for index, box in enumerate(ndimage.find_objects(labels)) if box is not None]
        inside = labels != 0
        label = labels[inside].astype(np.intp)
        rows, cols = np.nonzero(inside)
        nuclei = cls(
            [nucleus for nucleus, _ in found], [box for _, box in found], np.empty(0), inside, label, rows, cols
        )
        return dataclasses.replace(nuclei, area=nuclei.by_nucleus(None).astype(np.int64))

    def by_nucleus(self, weights: np.ndarray | None) -> np.ndarray:
        """(N,) sums of the labelled pixels' `weights` by nucleus (their count without): float64,
        exact for integers (sums below 2**53)."""
        return np.bincount(self.label, weights=weights, minlength=self.ids[-1] + 1 if self.ids else 1)[self.ids]

    def sums(self, image: np.ndarray) -> np.ndarray:
        """(N,) float64 sums of (H, W) `image` by nucleus."""
        return self.by_nucleus(image[self.inside])

    def centroids(self) -> np.ndarray:
        """(N, 2) (row, column) means: exact sums divided by the area, as regionprops' mean does."""
        return np.stack([self.by_nucleus(self.rows), self.by_nucleus(self.cols)], axis=1) / self.area[:, None]

    def eccentricities(self, labels: np.ndarray) -> list[float]:
        """regionprops' eccentricity, sqrt(1 - l2 / l1) of the inertia tensor's eigenvalues, from
        each nucleus's exact second moments. regionprops' float moments are off in the last bits,
        so a value within `ECCENTRICITY_MARGIN` of a tie at 4 decimals is measured by regionprops."""
        starts = np.zeros((self.ids[-1] + 1, 2), np.intp)
        starts[self.ids] = [(box[0].start, box[1].start) for box in self.boxes]
        # in the box: the sums of squares are exact integers for boxes up to 8192 px a side
        rows, cols = self.rows - starts[self.label, 0], self.cols - starts[self.label, 1]
        moments = [
            self.by_nucleus(values).astype(np.int64).tolist()
            for values in (rows, cols, rows * rows, cols * cols, rows * cols)
        ]
        values = []
        for i, (area, r, c, rr, cc, rc) in enumerate(zip(self.area.tolist(), *moments, strict=True)):
            var_r, var_c, cov = area * rr - r * r, area * cc - c * c, area * rc - r * c  # area² times the moments
            spread = math.sqrt((var_r - var_c) ** 2 + 4 * cov**2)
            squared = 0.0 if var_r + var_c == 0 else 2 * spread / (var_r + var_c + spread)  # 1 - l2 / l1
            tie = (math.floor(math.sqrt(squared) * 1e4) + 0.5) / 1e4
            near_tie = abs(squared - tie * tie) < ECCENTRICITY_MARGIN
            values.append(self._regionprops_eccentricity(labels, i) if near_tie else math.sqrt(squared))
        return values

    def means(self, labels: np.ndarray, probabilities: np.ndarray) -> list[float]:
        """regionprops' mean of (H, W) `probabilities` over each nucleus. numpy sums float32 in
        float32; within twice the error bound of both sums of a tie at 4 decimals, the mean is
        numpy's, taken over the nucleus's pixels in the same order as regionprops takes them."""
        values = probabilities[self.inside]
        means = self.by_nucleus(values) / self.area
        kind = probabilities.dtype if np.issubdtype(probabilities.dtype, np.floating) else np.float64
        roundings = np.finfo(kind).eps / 2 * (SUM_DEPTH + np.log2(self.area))  # numpy's
        roundings += np.finfo(np.float64).eps / 2 * self.area  # bincount's, one after another
        bound = roundings * self.by_nucleus(np.abs(values)) / self.area
        ties = (np.floor(means * 1e4) + 0.5) / 1e4
        near_tie = ~(np.abs(means - ties) >= 2 * bound)  # NaN too
        result = means.tolist()
        for i in np.flatnonzero(near_tie).tolist():
            box = self.boxes[i]
            result[i] = float(np.mean(probabilities[box][labels[box] == self.ids[i]], axis=0))
        return result

    def _regionprops_eccentricity(self, labels: np.ndarray, i: int) -> float:
        """regionprops' eccentricity of the i-th nucleus, measured in its box as regionprops does."""
        box = self.boxes[i]
        mask = (labels[box] == self.ids[i]).astype(np.uint8)
        return float(regionprops_table(mask, properties=("eccentricity",))["eccentricity"][0])


def _index(ids: list[int]) -> np.ndarray:
    """By id, its index in the increasing `ids` (0 for the ids not there)."""
    index = np.zeros(ids[-1] + 1 if ids else 1, np.int64)
    index[ids] = np.arange(len(ids))
    return index


PERIMETER_WEIGHTS = np.zeros(50, np.float64)
"""By neighbourhood code, what a border pixel adds to scikit-image's perimeter (4-neighbourhood)."""
PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
NEIGHBOUR_CODES = ((-1, 0, 2), (1, 0, 2), (0, -1, 2), (0, 1, 2), (-1, -1, 10), (-1, 1, 10), (1, -1, 10), (1, 1, 10))
"""(row step, column step, code) of a pixel's 8 neighbours: scikit-image's perimeter kernel."""


def _perimeters(labels: np.ndarray, nuclei: _Nuclei) -> list[float]:
    """scikit-image's perimeter of each nucleus, as regionprops gives it, for all at once.

    It codes each border pixel (one with a 4-neighbour outside its nucleus or the image) 1, plus
    the kernel's weight of each neighbour that is a border pixel of the same nucleus, and adds a
    weight per code: the same codes here, and the same dot product per nucleus (float sums are
    exact only in the same order).
    """
    padded = np.pad(labels, 1)
    inner = padded[1:-1, 1:-1]
    border = np.zeros(padded.shape, bool)
    border[1:-1, 1:-1] = (inner != 0) & (
        (padded[:-2, 1:-1] != inner)
        | (padded[2:, 1:-1] != inner)
        | (padded[1:-1, :-2] != inner)
        | (padded[1:-1, 2:] != inner)
    )
    flat, on_border = padded.ravel(), border.ravel()
    at = np.flatnonzero(on_border)
    nucleus = flat[at]
    code = np.ones(at.size, np.int64)
    for row_step, col_step, weight in NEIGHBOUR_CODES:
        neighbour = at + row_step * padded.shape[1] + col_step
        code += weight * (on_border[neighbour] & (flat[neighbour] == nucleus))
    codes = PERIMETER_WEIGHTS.size
    histograms = np.bincount(_index(nuclei.ids)[nucleus] * codes + code, minlength=len(nuclei.ids) * codes)
    return [float(histogram @ PERIMETER_WEIGHTS) for histogram in histograms.reshape(-1, codes)]


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
