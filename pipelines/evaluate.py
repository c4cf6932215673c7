"""DVC stage `evaluate`: the trained model on every official test image, as whole images.

Sliding-window inference and watershed post-processing with the `eval` params, then pixel and
instance metrics against the test labels. Writes metrics/test.json (per-image means and
dataset-level aggregates), reports/test_per_image.csv, and reports/samples/<id>.png with the
predicted instance map <id>_labels.tif and, for a model with an instance head, its map <id>_head.png.
Logs the same as test/... metrics and artifacts to the
training run named in models/run.json; `register` then registers its model with these scores.
metrics/test.json names the eval protocol (`eval_protocol`): scores compare only under the same one.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from patchunet import tracking
from patchunet.core.config import EvalConfig, MlflowConfig, PatchConfig, load_params, parse_section
from patchunet.core.console import run_stage
from patchunet.core.errors import DataError
from patchunet.core.files import atomic_directory, atomic_file, read_json_value, write_json
from patchunet.core.paths import MODEL_FILE, RAW_DIR, RUN_FILE, SAMPLES_DIR, TEST_METRICS, TEST_PER_IMAGE, labels_dir
from patchunet.data.monuseg import organ_of, pair_files, raw_dirs
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.evaluation.overlay import head_picture, match_overlay
from patchunet.evaluation.protocol import protocol_hash, sample_ids
from patchunet.inference.runtimes import runtime_network
from patchunet.inference.sliding_window import segment_image
from patchunet.io.annotations import count_nuclei
from patchunet.io.images import read_label_image, read_rgb_image, write_label_tiff, write_png
from patchunet.model.unet import load_model
from patchunet.training.devices import pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    patch_cfg = parse_section(PatchConfig, params, "patch")
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")

    run_id = read_json_value(RUN_FILE, "run_id")
    tracking.connect(tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri))
    tracking.get_run(run_id)  # fails now, not after the whole test set
    model = load_model(MODEL_FILE)
    network = runtime_network(model.to(pick_device()) if cfg.backend == "torch" else model, cfg)
    window = cfg.window_for(patch_cfg.size, model.cfg.size_multiple)
    records = pair_files(raw_dirs(RAW_DIR), "test")
    samples = sample_ids([r.image_id for r in records], cfg.samples)
    print(
        f"evaluate: {len(records)} test images, instance head {model.cfg.instance_head}, window {window} px, "
        f"overlap {cfg.overlap}, tta {cfg.tta}, {cfg.backend} {cfg.precision}"
    )

    scores, rows = [], []
    with atomic_directory(SAMPLES_DIR) as staging:
        for record in tqdm(records, desc="evaluate", unit="image"):
            image = read_rgb_image(record.image)
            label_path = labels_dir("test") / f"{record.image_id}.tif"
            truth = read_label_image(label_path)
            if truth.shape != image.shape[:2]:
                raise DataError(label_path, f"label map {truth.shape} does not match its image {image.shape[:2]}")
            started = time.perf_counter()
            maps, predicted = segment_image(network, image, cfg, window)
            seconds = time.perf_counter() - started
            image_scores = score_segmentation(truth, predicted)
            scores.append(image_scores)
            row = {
                "image_id": record.image_id,
                "organ": organ_of(record.image_id),
                "true_nuclei": count_nuclei(truth),
                "predicted_nuclei": int(predicted.max()),
                **{name: round(value, 4) for name, value in image_scores.as_dict().items()},
                "seconds": round(seconds, 2),
            }
            rows.append(row)
            tqdm.write(
                f"{record.image_id}: dice {row['dice']:.4f}  aji {row['aji']:.4f}  pq {row['pq']:.4f}  "
                f"nuclei {row['predicted_nuclei']}/{row['true_nuclei']}  {seconds:.1f} s"
            )
            if record.image_id in samples:
                write_png(staging / f"{record.image_id}.png", match_overlay(image, truth, predicted))
                write_label_tiff(staging / f"{record.image_id}_labels.tif", predicted)  # the dashboard redraws it
                picture = head_picture(maps, model.cfg.instance_head)
                if picture is not None:
                    write_png(staging / f"{record.image_id}_head.png", picture)

        summary = {
            **summarise_scores(scores),
            "window": window,
            "tta": cfg.tta,
            "seconds_per_image": round(statistics.median(r["seconds"] for r in rows), 2),
            "eval_protocol": protocol_hash(cfg, window),
        }
        write_json(TEST_METRICS, summary)
        with atomic_file(TEST_PER_IMAGE) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tracking.log_evaluation(mlflow_cfg.experiment, run_id, summary, [TEST_METRICS, TEST_PER_IMAGE], SAMPLES_DIR)

    mean, pooled = summary["per_image_mean"], summary["dataset"]
    print(
        f"evaluate: per-image mean dice {mean['dice']:.4f} aji {mean['aji']:.4f} aji+ {mean['aji_plus']:.4f} "
        f"pq {mean['pq']:.4f} f1 {mean['f1']:.4f}; dataset aji {pooled['aji']:.4f}; logged to run {run_id}"
    )


if __name__ == "__main__":
    run_stage(main)
