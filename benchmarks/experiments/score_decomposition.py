"""Where the val AJI goes: splitting or the foreground? Three scores per model, on the 6 val images:

- pipeline: the model's maps through its own post-processing (the `eval` values of params.yaml);
- split of the true foreground: the same post-processing with the foreground map replaced by the
  true nuclei mask (what the splitting alone loses: 1 would be perfect splitting);
- true markers in the predicted foreground: one marker per true nucleus (its pixels eroded by
  2 px), flooded over the predicted foreground's distance map (what the foreground alone loses).

If the second is near 1 and the third near the first, the foreground limits the model; if the
third is well above the first, the splitting does. The test set is never read.

    .venv/bin/python -m benchmarks.experiments.score_decomposition models/ablation/base8-s0.pt models/patchunet.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from benchmarks.harness import ROOT, Settings, predict_images, val_images
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.model.unet import load_model
from patchunet.postprocess.instances import (
    clean_foreground,
    distance_by_blob,
    finished_labels,
    instances_from_maps,
    with_orphan_blobs,
)

MARKER_EROSION = 2
"""Pixels a true nucleus is eroded by to make its marker, so touching nuclei's markers are apart."""


def true_markers(truth: np.ndarray) -> np.ndarray:
    """(H, W) int32: each true nucleus's pixels eroded by MARKER_EROSION (its centre pixel if that empties it)."""
    markers = np.zeros(truth.shape, np.int32)
    for nucleus, box in enumerate(ndimage.find_objects(truth), start=1):
        if box is None:
            continue
        inside = truth[box] == nucleus
        core = ndimage.binary_erosion(inside, iterations=MARKER_EROSION)
        if not core.any():
            ys, xs = np.nonzero(inside)
            core = np.zeros_like(inside)
            core[ys[len(ys) // 2], xs[len(xs) // 2]] = True
        markers[box][core] = nucleus
    return markers


def split_by_true_markers(foreground_probability: np.ndarray, truth: np.ndarray, settings: Settings) -> np.ndarray:
    cfg = settings.eval
    foreground = clean_foreground(foreground_probability, cfg.threshold, cfg.min_nucleus_area, cfg.max_hole_area)
    markers = true_markers(truth)
    markers[~foreground] = 0
    markers = with_orphan_blobs(markers, foreground, int(truth.max()))
    labels = watershed(-distance_by_blob(foreground), markers, mask=foreground).astype(np.int32)
    return finished_labels(labels, cfg.min_nucleus_area)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="model files (save_model), e.g. models/patchunet.pt")
    args = parser.parse_args()
    settings = Settings.load()
    val = val_images()
    print("model | head | val dice | pipeline AJI | split of the true foreground AJI | true markers AJI")
    for path in args.models:
        network = load_model(path if path.is_absolute() else ROOT / path)
        head = network.cfg.instance_head
        predictions = predict_images(network, val, settings, path.name)
        scores: dict[str, list] = {"pipeline": [], "true_foreground": [], "true_markers": []}
        for p in predictions:
            scores["pipeline"].append(score_segmentation(p.truth, instances_from_maps(p.maps, head, settings.eval)))
            with_true_foreground = p.maps.copy()
            with_true_foreground[0] = p.truth > 0
            scores["true_foreground"].append(
                score_segmentation(p.truth, instances_from_maps(with_true_foreground, head, settings.eval))
            )
            scores["true_markers"].append(
                score_segmentation(p.truth, split_by_true_markers(p.maps[0], p.truth, settings))
            )
        means = {name: summarise_scores(s)["per_image_mean"] for name, s in scores.items()}
        print(
            f"{path} | {head} | {means['pipeline']['dice']:.4f} | {means['pipeline']['aji']:.4f} | "
            f"{means['true_foreground']['aji']:.4f} | {means['true_markers']['aji']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
