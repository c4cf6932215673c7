"""An image's nuclei at its own scale: instance labels and nucleus probabilities.

`patchunet predict`, each tile of `predict-slide` and the registered model (serving/served_nuclei.py)
call `segment_nuclei`, and tabulate its nuclei with `postprocess.nuclei.nucleus_table`, so a served
or loaded model gives exactly the labels and the table the commands write.
"""

from __future__ import annotations

import cv2
import numpy as np

from patchunet.core.config import EvalConfig
from patchunet.inference.runtimes import Network
from patchunet.inference.sliding_window import segment_image
from patchunet.io.scale import labels_to_shape, resample_image


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
