"""Time of the nucleus table and of the nuclei's GeoJSON outlines per image, today's against how
they were measured before, on the same label maps in one run:
- table: scikit-image's `regionprops_table`, one nucleus at a time (the reference), against
  `postprocess.nuclei.nucleus_table`, which measures all nuclei at once;
- outlines: each nucleus labelled, hole-filled and traced on its own (the reference), against
  `io.geojson.nuclei_feature_collection`, which finishes the simple nuclei's rings all at once.
The label maps are the ground-truth instance maps of the MoNuSeg images (`dvc repro masks`), with
their images for the mean grey level and, as the network's map, the smoothed foreground (float32).
Versions alternate within each repeat so machine noise hits them alike. Prints the median seconds
per image of each, their ratio, and whether the rows and the geometries are identical.

    .venv/bin/python -m benchmarks.perf.nucleus_table_speed --split test --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage
from skimage.measure import regionprops_table

from benchmarks import pipeline_images
from patchunet.io.geojson import nuclei_feature_collection
from patchunet.postprocess.nuclei import nucleus_table
from patchunet.stages.evaluate import read_eval_image

MPP = 0.25
"""µm per pixel: MoNuSeg's 40x, for the µm columns."""

# The nucleus table and the outlines as they were before (docstrings left out): the references,
# which tests/postprocess/test_nucleus_table_reference.py and tests/io/test_geojson_reference.py
# compare today's with too.


def regionprops_nucleus_table(
    labels: np.ndarray,
    mpp: float | None = None,
    probabilities: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> list[dict]:
    properties = ("label", "area", "centroid", "bbox", "perimeter", "eccentricity")
    if probabilities is not None:
        properties += ("intensity_mean",)
    table = regionprops_table(labels, intensity_image=probabilities, properties=properties)
    grey = {}
    if image is not None:
        means = regionprops_table(
            labels, intensity_image=cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), properties=("label", "intensity_mean")
        )
        grey = {int(n): round(float(m), 2) for n, m in zip(means["label"], means["intensity_mean"], strict=True)}
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


def nucleus_by_nucleus_geometries(labels: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[dict]:
    padded = np.pad(labels, 1)
    geometries = []
    for index, box in enumerate(ndimage.find_objects(padded)):
        if box is None:
            continue
        around = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        origin = np.array([around[1].start - 1 + offset[0], around[0].start - 1 + offset[1]])
        polygons = [[(ring + origin).tolist() for ring in rings] for rings in outline(padded[around] == index + 1)]
        geometries.append(
            {"type": "Polygon", "coordinates": polygons[0]}
            if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
    return geometries


def outline(mask: np.ndarray) -> list[list[np.ndarray]]:
    parts, count = ndimage.label(mask)
    polygons = []
    for part in range(1, count + 1):
        inside = parts == part
        filled = ndimage.binary_fill_holes(inside)
        holes, hole_count = ndimage.label(filled & ~inside)
        rings = [ring_of(filled, exterior=True)]
        rings += [ring_of(holes == hole, exterior=False) for hole in range(1, hole_count + 1)]
        polygons.append([np.vstack([ring, ring[:1]]) for ring in rings])
    return polygons


def ring_of(region: np.ndarray, *, exterior: bool) -> np.ndarray:
    doubled = np.repeat(np.repeat(region.astype(np.uint8), 2, axis=0), 2, axis=1)
    [contour], _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    corners = (contour[:, 0, :] + 1) // 2
    corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]
    before, after = corners - np.roll(corners, 1, axis=0), np.roll(corners, -1, axis=0) - corners
    corners = corners[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]
    x, y = corners[:, 0].astype(np.float64), corners[:, 1].astype(np.float64)
    if (0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0) != exterior:
        corners = corners[::-1]
    return corners


def geometries(labels: np.ndarray) -> list[dict]:
    return [feature["geometry"] for feature in nuclei_feature_collection(labels)["features"]]


Inputs = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(labels, probabilities, image) of one image."""
STEPS: dict[str, dict[str, Callable[[Inputs], object]]] = {
    "table": {
        "before": lambda x: regionprops_nucleus_table(x[0], MPP, x[1], x[2]),
        "now": lambda x: nucleus_table(x[0], MPP, x[1], x[2]),
    },
    "outlines": {
        "before": lambda x: nucleus_by_nucleus_geometries(x[0]),
        "now": lambda x: geometries(x[0]),
    },
}


def read_inputs(split: str, count: int | None) -> list[Inputs]:
    """The label maps of `split`'s images, a stand-in probability map and the image of each."""
    inputs = []
    for _, image_path, label_path in pipeline_images(split)[:count]:
        image, labels = read_eval_image(image_path, label_path)
        probabilities = ndimage.gaussian_filter((labels > 0).astype(np.float32), 1.5)
        inputs.append((labels, probabilities, image))
    return inputs


def timed(inputs: list[Inputs], repeats: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Median seconds per image of each version of each step, and how many images each step gave
    identical results on (compared in the first repeat)."""
    seconds = {step: {version: [] for version in versions} for step, versions in STEPS.items()}
    identical = dict.fromkeys(STEPS, 0)
    for repeat in range(repeats):
        for x in inputs:
            for step, versions in STEPS.items():
                results = {}
                for version in list(versions)[:: 1 if repeat % 2 == 0 else -1]:
                    started = time.perf_counter()
                    results[version] = versions[version](x)
                    seconds[step][version].append(time.perf_counter() - started)
                if repeat == 0:
                    identical[step] += results["before"] == results["now"]
        print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    medians = {step: {v: statistics.median(s) for v, s in versions.items()} for step, versions in seconds.items()}
    return medians, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--images", type=int, help="the first N images of the split (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    inputs = read_inputs(args.split, args.images)
    nuclei = sum(len(np.unique(labels)) - 1 for labels, _, _ in inputs)
    medians, identical = timed(inputs, args.repeats)
    side = f"{inputs[0][0].shape[1]}x{inputs[0][0].shape[0]}"
    print(f"{len(inputs)} {args.split} images of {side}, {nuclei} nuclei; {args.repeats} repeats")
    print("| step | before s/image | now s/image | before / now | identical |")
    print("|---|---|---|---|---|")
    for step, versions in medians.items():
        print(
            f"| {step} | {versions['before']:.3f} | {versions['now']:.3f} | {versions['before'] / versions['now']:.1f}x"
            f" | {identical[step]}/{len(inputs)} |"
        )


if __name__ == "__main__":
    main()
