"""An image's nuclei at its own scale: instance labels and nucleus probabilities.

`patchunet predict`, each tile of `predict-slide` and the registered model (serving/served_nuclei.py)
call `segment_nuclei`, and tabulate its nuclei with `postprocess.nuclei.nucleus_table`, so a served
or loaded model gives exactly the labels and the table the commands write.
"""

from __future__ import annotations

import cv2
import numpy as np

from patchunet.core.config import EvalConfig, InstanceHead
from patchunet.inference.runtimes import Network
from patchunet.inference.sliding_window import image_maps
from patchunet.io.scale import labels_to_shape, resample_image
from patchunet.postprocess.instances import instances_from_maps


def segment_nuclei(
    network: Network, image: np.ndarray, cfg: EvalConfig, window: int, image_mpp: float
) -> tuple[np.ndarray, np.ndarray]:
    """((H, W) instance labels, (H, W) float32 nucleus probabilities) of an (H, W, 3) uint8 image at
    `image_mpp` µm per pixel: resampled to the model's scale, segmented, and mapped back."""
    maps = nucleus_maps(network, image, cfg, window, image_mpp)
    return nuclei_from_maps(maps, network.cfg.instance_head, cfg, image.shape[:2])


def nucleus_maps(
    network: Network,
    image: np.ndarray,
    cfg: EvalConfig,
    window: int,
    image_mpp: float,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """The network's half of `segment_nuclei`: the (C, h, w) maps of the image at the model's scale,
    of only the windows that hold a pixel of (H, W) bool `needed`, if given (`predict_maps`: the
    maps are 0 where none ran)."""
    resampled = resample_image(image, image_mpp, network.cfg.microns_per_pixel)
    if needed is not None and needed.shape != resampled.shape[:2]:
        size = resampled.shape[1::-1]
        needed = cv2.resize(needed.view(np.uint8), size, interpolation=cv2.INTER_NEAREST_EXACT) > 0
    return image_maps(network, resampled, cfg, window, needed=needed)


def nuclei_from_maps(
    maps: np.ndarray, head: InstanceHead, cfg: EvalConfig, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The post-processing half of `segment_nuclei`, back at the image's (H, W) `shape`. It needs no
    network, so a thread runs it while the network segments the next image (predict-slide's tiles)."""
    labels = instances_from_maps(maps, head, cfg)
    probabilities = maps[0]
    if probabilities.shape != shape:
        probabilities = cv2.resize(probabilities, shape[::-1], interpolation=cv2.INTER_LINEAR)
    return labels_to_shape(labels, shape), probabilities
