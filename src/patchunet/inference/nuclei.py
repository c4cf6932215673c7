"""An image's nuclei at its own scale: instance labels, probabilities and one row per nucleus.

`patchunet predict` and the registered model (serving/served_nuclei.py) both call `segment_nuclei`
and `nucleus_table`, so a served or loaded model gives exactly the labels the command writes.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.measure import regionprops_table

from patchunet.core.config import EvalConfig
from patchunet.inference.runtimes import Network
from patchunet.inference.sliding_window import segment_image
from patchunet.io.scale import labels_to_shape, resample_image

NUCLEUS_COLUMNS = (
    "nucleus",
    "area_px",
    "area_um2",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "mean_probability",
)
"""One row per nucleus; the box is in pixels, max exclusive, as numpy slices take it."""


def segment_nuclei(
    network: Network, image: np.ndarray, cfg: EvalConfig, window: int, image_mpp: float
) -> tuple[np.ndarray, np.ndarray]:
    """((H, W) instance labels, (H, W) float32 nucleus probabilities) of an (H, W, 3) uint8 image at
    `image_mpp` µm per pixel: resampled to the model's scale, segmented, and mapped back."""
    maps, labels = segment_image(network, resample_image(image, image_mpp, network.cfg.microns_per_pixel), cfg, window)
    probabilities = maps[0]
    if probabilities.shape != image.shape[:2]:
        probabilities = cv2.resize(probabilities, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return labels_to_shape(labels, image.shape), probabilities


def nucleus_table(labels: np.ndarray, mpp: float | None = None, probabilities: np.ndarray | None = None) -> list[dict]:
    """One row per nucleus of (H, W) labels at `mpp` µm per pixel (NUCLEUS_COLUMNS): area in pixels
    and µm² (blank without an mpp), centroid, bounding box and mean `probabilities` (blank without)."""
    properties = ("label", "area", "centroid", "bbox") + (("intensity_mean",) if probabilities is not None else ())
    table = regionprops_table(labels, intensity_image=probabilities, properties=properties)
    rows = []
    for i, nucleus in enumerate(table["label"]):
        area = int(table["area"][i])
        rows.append(
            {
                "nucleus": int(nucleus),
                "area_px": area,
                "area_um2": "" if mpp is None else round(area * mpp**2, 3),
                "centroid_y": round(float(table["centroid-0"][i]), 1),
                "centroid_x": round(float(table["centroid-1"][i]), 1),
                "bbox_min_y": int(table["bbox-0"][i]),
                "bbox_min_x": int(table["bbox-1"][i]),
                "bbox_max_y": int(table["bbox-2"][i]),
                "bbox_max_x": int(table["bbox-3"][i]),
                "mean_probability": "" if probabilities is None else round(float(table["intensity_mean"][i]), 4),
            }
        )
    return rows


def shape_features(labels: np.ndarray, image: np.ndarray) -> dict[int, dict]:
    """By id, for every nucleus of (H, W) `labels` over the (H, W, 3) uint8 `image`: its perimeter in
    pixels, the eccentricity of its ellipse (0 a circle, toward 1 a line) and the mean grey level
    (0 black to 255 white) of the image under it."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    properties = ("label", "perimeter", "eccentricity", "intensity_mean")
    table = regionprops_table(labels, intensity_image=grey, properties=properties)
    return {
        int(nucleus): {
            "perimeter_px": round(float(table["perimeter"][i]), 2),
            "eccentricity": round(float(table["eccentricity"][i]), 4),
            "mean_intensity": round(float(table["intensity_mean"][i]), 2),
        }
        for i, nucleus in enumerate(table["label"])
    }
