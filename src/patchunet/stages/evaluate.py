"""Stage `evaluate`: the trained model on every official test image, as whole images.

Sliding-window inference and watershed post-processing with the `eval` params, then pixel and
instance metrics against the test labels. Writes metrics/test.json (per-image means and
dataset-level aggregates), reports/test_per_image.csv, and reports/samples/<id>.png with the
predicted instance map <id>_labels.tif and, for a model with an instance head, its map <id>_head.png.
Logs the same as test/... metrics and artifacts to the training run named in models/run.json;
`register` then registers its model with these scores. metrics/test.json names the eval protocol
(`eval_protocol`): scores compare only under the same one.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from patchunet import tracking
from patchunet.core.config import EvalConfig, InstanceHead, MlflowConfig, PatchConfig, parse_section
from patchunet.core.errors import DataError
from patchunet.core.files import atomic_directory, read_json_value, write_csv, write_json
from patchunet.core.paths import MODEL_FILE, RAW_DIR, RUN_FILE, SAMPLES_DIR, TEST_METRICS, TEST_PER_IMAGE, labels_dir
from patchunet.data.monuseg import organ_of, pair_files, raw_dirs
from patchunet.evaluation.metrics import SegmentationScores, score_segmentation, summarise_scores
from patchunet.evaluation.overlay import head_picture, match_overlay
from patchunet.evaluation.protocol import protocol_hash, sample_ids
from patchunet.inference.runtimes import Network, runtime_network
from patchunet.inference.sliding_window import segment_image
from patchunet.io.annotations import count_nuclei
from patchunet.io.images import read_label_image, read_rgb_image, write_label_tiff, write_png
from patchunet.model.unet import PatchUNet, load_model
from patchunet.training.devices import pick_device


@dataclasses.dataclass(frozen=True)
class EvaluateSummary:
    metrics: dict
    """What metrics/test.json holds: per_image_mean, dataset, window, tta, seconds_per_image, eval_protocol."""
    rows: list[dict]
    """reports/test_per_image.csv, one row per test image."""
    run_id: str
    """The training run the scores were logged to."""


class EvalImage(NamedTuple):
    """An image to score and its instance labels."""

    image_id: str
    image: Path
    labels: Path


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """One image segmented and scored."""

    row: dict
    """Its row of reports/test_per_image.csv."""
    scores: SegmentationScores
    maps: np.ndarray
    """(C, H, W) float32: the network's maps."""
    predicted: np.ndarray
    """(H, W) int32 instance labels."""
    seconds: float
    """Network and post-processing."""


def run(params: dict, root: Path) -> EvaluateSummary:
    """Segment and score every test image; write the metrics, the per-image table and the samples."""
    cfg = parse_section(EvalConfig, params, "eval")
    patch_cfg = parse_section(PatchConfig, params, "patch")
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")
    run_id = read_json_value(root / RUN_FILE, "run_id")
    tracking.connect(tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri))
    tracking.get_run(run_id)  # fails now, not after the whole test set
    model = load_model(root / MODEL_FILE)
    network = evaluated_network(model, cfg)
    window = cfg.window_for(patch_cfg.size, model.cfg.size_multiple)
    images = held_out_images(root)
    samples = sample_ids([image.image_id for image in images], cfg.samples)
    print(
        f"evaluate: {len(images)} test images, instance head {model.cfg.instance_head}, window {window} px, "
        f"overlap {cfg.overlap}, tta {cfg.tta}, {cfg.backend} {cfg.precision}"
    )

    metrics_file, per_image, samples_dir = root / TEST_METRICS, root / TEST_PER_IMAGE, root / SAMPLES_DIR
    with atomic_directory(samples_dir) as staging:

        def write_sample(image_id: str, image: np.ndarray, truth: np.ndarray, result: ImageResult) -> None:
            if image_id in samples:
                write_samples(staging, image_id, image, truth, result, model.cfg.instance_head)

        results = evaluate_images(network, images, cfg, window, on_image=write_sample)
        metrics = scores_summary(results, cfg, window)
        write_json(metrics_file, metrics)
        write_csv(per_image, [result.row for result in results])
    tracking.log_evaluation(mlflow_cfg.experiment, run_id, metrics, [metrics_file, per_image], samples_dir)

    mean, pooled = metrics["per_image_mean"], metrics["dataset"]
    print(
        f"evaluate: per-image mean dice {mean['dice']:.4f} aji {mean['aji']:.4f} aji+ {mean['aji_plus']:.4f} "
        f"pq {mean['pq']:.4f} f1 {mean['f1']:.4f}; dataset aji {pooled['aji']:.4f}; logged to run {run_id}"
    )
    return EvaluateSummary(metrics, [result.row for result in results], run_id)


def evaluated_network(model: PatchUNet, cfg: EvalConfig) -> Network:
    """`model` on the runtime `eval.backend` names, on the best device where that is torch."""
    return runtime_network(model.to(pick_device()) if cfg.backend == "torch" else model, cfg)


def held_out_images(root: Path) -> list[EvalImage]:
    """The official test images of the project at `root`, with their label maps (the masks stage's)."""
    records = pair_files(raw_dirs(root / RAW_DIR), "test")
    return [EvalImage(r.image_id, r.image, root / labels_dir("test") / f"{r.image_id}.tif") for r in records]


def read_eval_image(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 image and its (H, W) labels, refusing labels of another shape."""
    image = read_rgb_image(image_path)
    truth = read_label_image(label_path)
    if truth.shape != image.shape[:2]:
        raise DataError(label_path, f"label map {truth.shape} does not match its image {image.shape[:2]}")
    return image, truth


def evaluate_images(
    network: Network,
    images: list[EvalImage],
    cfg: EvalConfig,
    window: int,
    on_image: Callable[[str, np.ndarray, np.ndarray, ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Segment and score each image, one line each; `on_image(id, image, truth, result)` after each."""
    results = []
    for image_id, image_path, label_path in tqdm(images, desc="evaluate", unit="image"):
        image, truth = read_eval_image(image_path, label_path)
        result = score_image(network, image_id, image, truth, cfg, window)
        results.append(result)
        row = result.row
        tqdm.write(
            f"{image_id}: dice {row['dice']:.4f}  aji {row['aji']:.4f}  pq {row['pq']:.4f}  "
            f"nuclei {row['predicted_nuclei']}/{row['true_nuclei']}  {result.seconds:.1f} s"
        )
        if on_image is not None:
            on_image(image_id, image, truth, result)
    return results


def score_image(
    network: Network, image_id: str, image: np.ndarray, truth: np.ndarray, cfg: EvalConfig, window: int
) -> ImageResult:
    """Segment one whole image with the `eval` params and score it against `truth`."""
    started = time.perf_counter()
    maps, predicted = segment_image(network, image, cfg, window)
    seconds = time.perf_counter() - started
    scores = score_segmentation(truth, predicted)
    row = {
        "image_id": image_id,
        "organ": organ_of(image_id),
        "true_nuclei": count_nuclei(truth),
        "predicted_nuclei": int(predicted.max()),
        **{name: round(value, 4) for name, value in scores.as_dict().items()},
        "seconds": round(seconds, 2),
    }
    return ImageResult(row, scores, maps, predicted, seconds)


def write_samples(
    folder: Path, image_id: str, image: np.ndarray, truth: np.ndarray, result: ImageResult, head: InstanceHead
) -> None:
    """<id>.png (truth beside prediction), <id>_labels.tif and, for a model with a head, <id>_head.png."""
    write_png(folder / f"{image_id}.png", match_overlay(image, truth, result.predicted))
    write_label_tiff(folder / f"{image_id}_labels.tif", result.predicted)  # the dashboard redraws it
    picture = head_picture(result.maps, head)
    if picture is not None:
        write_png(folder / f"{image_id}_head.png", picture)


def scores_summary(results: list[ImageResult], cfg: EvalConfig, window: int) -> dict:
    """metrics/test.json: the scores' per-image means and dataset aggregates, and how they were made."""
    return {
        **summarise_scores([result.scores for result in results]),
        "window": window,
        "tta": cfg.tta,
        "seconds_per_image": round(statistics.median(result.row["seconds"] for result in results), 2),
        "eval_protocol": protocol_hash(cfg, window),
    }
