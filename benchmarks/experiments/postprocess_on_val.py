"""How the post-processing params were chosen: a grid over them, scored on the val images only.

Predicts the 6 validation images once with the trained model (models/patchunet.pt) and the
`eval` sliding-window params, then re-runs only the post-processing for each setting of the
model's instance head's grid (patchunet.evaluation.postprocess_search.GRIDS) and prints per-image-mean Dice,
AJI, AJI+, PQ and F1, best AJI first. The test set is never read. Copy the winner into `eval`.
Every setting's scores go to `--table` (reports/postprocess_on_val.csv), best first; its stage in
benchmarks/experiments/dvc.yaml tracks the table.

    .venv/bin/python -m benchmarks.experiments.postprocess_on_val
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.harness import ROOT, Settings, predict_images, val_images
from patchunet.core.files import write_csv
from patchunet.core.paths import MODEL_FILE
from patchunet.evaluation.postprocess_search import search_postprocessing

TABLE = "reports/postprocess_on_val.csv"
SCORES = ("dice", "aji", "aji_plus", "pq", "f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / MODEL_FILE)
    parser.add_argument("--top", type=int, default=10, help="settings to print")
    parser.add_argument("--table", type=Path, default=ROOT / TABLE, help=f"every setting's scores (default {TABLE})")
    args = parser.parse_args()
    from patchunet.model.unet import load_model

    settings = Settings.load()
    model = load_model(args.model)
    head = model.cfg.instance_head
    predictions = predict_images(model, val_images(), settings, "val")
    results = search_postprocessing([(p.maps, p.truth) for p in predictions], head, settings.eval)
    write_csv(args.table, [{**r.changed, **{k: r.per_image_mean[k] for k in SCORES}} for r in results])
    print(f"{len(predictions)} val images, instance head {head}; per-image means; other eval values as in params.yaml")
    for result in results[: args.top]:
        mean = result.per_image_mean
        scores = "  ".join(f"{k} {mean[k]:.4f}" for k in SCORES)
        print(f"{result.changed}: {scores}")


if __name__ == "__main__":
    main()
