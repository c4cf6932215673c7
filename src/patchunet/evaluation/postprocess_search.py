"""Choosing the `eval` post-processing values of a trained model, on validation images only.

The network runs once per image; only the post-processing reruns for each setting of a small
grid, which depends on the instance head (each head has its own marker and line values). The
setting with the best per-image-mean AJI wins; the test set is never an input here.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from patchunet.core.config import EvalConfig, InstanceHead
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.postprocess.instances import instances_from_maps

GRIDS: dict[str, dict[str, list]] = {
    "none": {"threshold": [0.4, 0.5, 0.6], "distance_sigma": [0.0, 1.0, 2.0], "watershed_h": [0.5, 1.0, 2.0]},
    "boundary": {
        "threshold": [0.4, 0.5, 0.6],
        "marker_threshold": [0.3, 0.5, 0.7, 0.85],
        "min_marker_area": [5, 10, 20],
    },
    "distance": {
        "threshold": [0.4, 0.5, 0.6],
        "marker_threshold": [0.2, 0.3, 0.4, 0.5, 0.6],
        "distance_sigma": [0.0, 1.0],
    },
    "hover": {"threshold": [0.4, 0.5, 0.6], "marker_threshold": [0.3, 0.4, 0.5, 0.6], "distance_sigma": [0.0, 1.0]},
}
"""The `eval` keys searched for each head, and their candidate values."""


@dataclasses.dataclass(frozen=True)
class SettingScore:
    cfg: EvalConfig
    changed: dict
    """The searched keys and their values in `cfg`."""
    per_image_mean: dict[str, float]


def search_postprocessing(
    predictions: list[tuple[np.ndarray, np.ndarray]], head: InstanceHead, base: EvalConfig
) -> list[SettingScore]:
    """Every setting of the head's grid, scored on (maps, true labels) pairs; best val AJI first."""
    grid = GRIDS[head]
    results = []
    for values in itertools.product(*grid.values()):
        changed = dict(zip(grid, values, strict=True))
        cfg = dataclasses.replace(base, **changed)
        scores = [score_segmentation(truth, instances_from_maps(maps, head, cfg)) for maps, truth in predictions]
        results.append(SettingScore(cfg, changed, summarise_scores(scores)["per_image_mean"]))
    return sorted(results, key=lambda r: -r.per_image_mean["aji"])
