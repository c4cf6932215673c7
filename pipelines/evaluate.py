"""DVC stage `evaluate`: the trained model on every official test image, as whole images.

Sliding-window inference and watershed post-processing with the `eval` params, then pixel and
instance metrics against the test labels. Writes metrics/test.json (per-image means and
dataset-level aggregates), reports/test_per_image.csv, and reports/samples/<id>.png with the
predicted instance map <id>_labels.tif and, for a model with an instance head, its map <id>_head.png.
Logs the same as test/... metrics and artifacts to the
training run named in models/run.json, and tags its registered model version with the scores.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from patchunet import tracking
from patchunet.cli import run_stage
from patchunet.config import EvalConfig, MlflowConfig, PatchConfig, load_params, parse_section
from patchunet.errors import DataError
from patchunet.inference import segment_image
from patchunet.io import (
    atomic_directory,
    atomic_file,
    read_json_value,
    read_label_image,
    read_rgb_image,
    write_json,
    write_label_tiff,
    write_png,
)
from patchunet.layout import MODEL_FILE, RAW_DIR, RUN_FILE, SAMPLES_DIR, TEST_METRICS, TEST_PER_IMAGE, labels_dir
from patchunet.masks import count_nuclei
from patchunet.metrics import score_segmentation, summarise_scores
from patchunet.model import load_model
from patchunet.monuseg import organ_of, pair_files, raw_dirs
from patchunet.overlay import head_picture, match_overlay
from patchunet.training.devices import pick_device

EVAL_PARAMS_TAG = "eval_params"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = parse_section(EvalConfig, params, "eval")
    patch_cfg = parse_section(PatchConfig, params, "patch")
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")

    run_record = {key: read_json_value(RUN_FILE, key) for key in ("run_id", "registered_model", "version")}
    tracking.connect(tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri))
    tracking.get_run(run_record["run_id"])  # fails now, not after the whole test set
    model = load_model(MODEL_FILE).to(pick_device())
    window = cfg.window_for(patch_cfg.size, model.cfg.size_multiple)
    records = pair_files(raw_dirs(RAW_DIR), "test")
    samples = sample_ids([r.image_id for r in records], cfg.samples)
    print(
        f"evaluate: {len(records)} test images, instance head {model.cfg.instance_head}, window {window} px, "
        f"overlap {cfg.overlap}, tta {cfg.tta}"
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
            maps, predicted = segment_image(model, image, cfg, window)
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
        }
        write_json(TEST_METRICS, summary)
        with atomic_file(TEST_PER_IMAGE) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    log_to_mlflow(run_record, mlflow_cfg.experiment, summary, protocol_hash(cfg, window))

    mean, pooled = summary["per_image_mean"], summary["dataset"]
    print(
        f"evaluate: per-image mean dice {mean['dice']:.4f} aji {mean['aji']:.4f} aji+ {mean['aji_plus']:.4f} "
        f"pq {mean['pq']:.4f} f1 {mean['f1']:.4f}; dataset aji {pooled['aji']:.4f}; logged to run "
        f"{run_record['run_id']} and {run_record['registered_model']} version {run_record['version']}"
    )


def protocol_hash(cfg: EvalConfig, window: int) -> str:
    """Which evaluation protocol gave the scores: register compares versions only under the same one."""
    settings = {**dataclasses.asdict(cfg), "window": window, "samples": None}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def sample_ids(image_ids: list[str], count: int) -> set[str]:
    """`count` ids spread evenly over the sorted ids: the same images for every model version."""
    ordered = sorted(image_ids)
    count = min(count, len(ordered))
    return {ordered[i * len(ordered) // count] for i in range(count)}


def log_to_mlflow(run_record: dict, experiment: str, summary: dict, eval_params_hash: str) -> None:
    """test/<score> (per-image means) and test/dataset/<score> on the run; scores as version tags."""
    mean, pooled = summary["per_image_mean"], summary["dataset"]
    with tracking.run(experiment, run_id=run_record["run_id"]):
        tracking.log_metrics(
            {
                **{f"test/{name}": value for name, value in mean.items()},
                **{f"test/dataset/{name}": value for name, value in pooled.items()},
                "test/seconds_per_image": summary["seconds_per_image"],
            }
        )
        for path in (TEST_METRICS, TEST_PER_IMAGE):
            tracking.log_artifact(path, artifact_path="evaluation")
        tracking.log_artifact(SAMPLES_DIR, artifact_path="evaluation/samples")
    tracking.set_version_tags(
        run_record["registered_model"],
        run_record["version"],
        {
            **{f"test_{name}": round(value, 4) for name, value in mean.items()},
            "test_seconds_per_image": summary["seconds_per_image"],
            EVAL_PARAMS_TAG: eval_params_hash,
        },
    )


if __name__ == "__main__":
    run_stage(main)
