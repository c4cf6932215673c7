"""Scoring a model in training on the whole val images, as the evaluate stage scores the test set.

Patch Dice at a fixed threshold says little about instances: the best epoch is picked by what is
scored in the end, the per-image mean AJI of whole images after post-processing (`train.select_by`).
"""

from __future__ import annotations

import torch

from patchunet.core.config import EvalConfig
from patchunet.data.patches import PatchSet
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.inference.sliding_window import segment_image


class WholeImageAJI:
    """Per-image mean AJI of the val images (put together from the val patch set) with the `eval`
    sliding window and post-processing; a callable `fit` takes as its `val_scorer`."""

    def __init__(self, val_patches: PatchSet, cfg: EvalConfig, window: int) -> None:
        self.images = list(val_patches.whole_images().values())
        if not self.images:
            raise ValueError("the val patch set holds no image to score")
        self.cfg, self.window = cfg, window

    def __call__(self, model: torch.nn.Module) -> float:
        scores = [
            score_segmentation(truth, segment_image(model, image, self.cfg, self.window)[1])
            for image, truth in self.images
        ]
        return summarise_scores(scores)["per_image_mean"]["aji"]
