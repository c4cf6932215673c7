"""How the post-processing params were chosen: a grid over them, scored on the val images only.

Predicts the 6 validation images once with the trained model (models/patchunet.pt) and the
`eval` sliding-window params, then re-runs only the post-processing for each setting and
prints per-image-mean Dice, AJI, AJI+, PQ and F1, best AJI first. The test set is never read.

    .venv/bin/python benchmarks/postprocess_on_val.py
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from patchunet.config import EvalConfig, PatchConfig, load_params, parse_section
from patchunet.inference import predict_probabilities
from patchunet.io import read_label_image, read_rgb_image
from patchunet.layout import MODEL_FILE, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.metrics import score_segmentation, summarise_scores
from patchunet.postprocess import instances_from_probabilities
from patchunet.split import read_split

ROOT = Path(__file__).resolve().parents[1]
GRID = {
    "distance_sigma": [0.0, 1.0, 2.0],
    "watershed_h": [0.5, 1.0, 2.0],
    "min_nucleus_area": [32, 64, 96],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    args = parser.parse_args()
    from patchunet.model import load_model

    params = load_params(ROOT / "params.yaml")
    cfg = parse_section(EvalConfig, params, "eval")
    model = load_model(args.model)
    window = cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    val_ids = read_split(ROOT / SPLIT_FILE)["val"]
    predictions = [
        (
            predict_probabilities(
                model,
                read_rgb_image(ROOT / RAW_DIR / "train/images" / f"{image_id}.tif"),
                window=window,
                overlap=cfg.overlap,
                batch_size=cfg.batch_size,
                blend=cfg.blend,
            ),
            read_label_image(ROOT / labels_dir("train") / f"{image_id}.tif"),
        )
        for image_id in val_ids
    ]
    results = []
    for values in itertools.product(*GRID.values()):
        setting = dict(zip(GRID, values, strict=True))
        scores = [
            score_segmentation(
                truth,
                instances_from_probabilities(
                    probabilities, threshold=cfg.threshold, max_hole_area=cfg.max_hole_area, **setting
                ),
            )
            for probabilities, truth in predictions
        ]
        results.append((summarise_scores(scores)["per_image_mean"], setting))
    print(f"{len(val_ids)} val images; per-image means; threshold {cfg.threshold}, max hole {cfg.max_hole_area}")
    for mean, setting in sorted(results, key=lambda r: -r[0]["aji"]):
        scores = "  ".join(f"{k} {mean[k]:.4f}" for k in ("dice", "aji", "aji_plus", "pq", "f1"))
        print(f"{setting}: {scores}")


if __name__ == "__main__":
    main()
