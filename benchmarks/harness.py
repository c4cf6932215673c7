"""What the ablation, seeds and score-decomposition scripts share: train one network on the
pipeline's patch sets, predict whole images, choose post-processing on val, score on test.

Run from the repository root after `dvc repro patches` (the scripts import this file from beside them).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from patchunet.config import (
    AugmentConfig,
    EvalConfig,
    InstanceHead,
    PatchConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from patchunet.data.images import read_label_image, read_rgb_image
from patchunet.data.monuseg import pair_files, raw_dirs
from patchunet.data.patches import PatchSet
from patchunet.data.split import read_split
from patchunet.evaluation.metrics import score_segmentation, summarise_scores
from patchunet.inference.postprocess import instances_from_maps
from patchunet.inference.sliding_window import image_maps
from patchunet.paths import PATCH_DIR, RAW_DIR, SPLIT_FILE, labels_dir
from patchunet.training.builder import make_datasets, make_loaders
from patchunet.training.checkpoints import BEST_CHECKPOINT, load_checkpoint
from patchunet.training.devices import pick_device
from patchunet.training.loop import EpochResult, FitResult, fit

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Settings:
    """The params.yaml sections a benchmark run reads."""

    train: TrainConfig
    augment: AugmentConfig
    eval: EvalConfig
    patch: PatchConfig

    @classmethod
    def load(cls, path: Path = ROOT / "params.yaml") -> Settings:
        params = load_params(path)
        sections = {"train": TrainConfig, "augment": AugmentConfig, "eval": EvalConfig, "patch": PatchConfig}
        return cls(**{name: parse_section(kind, params, name) for name, kind in sections.items()})


def train_network(
    network: torch.nn.Module, head: InstanceHead, settings: Settings, checkpoint_dir: Path, label: str
) -> tuple[FitResult, float]:
    """Train `network` in place on the pipeline's patch sets as the train stage does; load its
    best epoch; return the fit and the training seconds. One line per epoch."""
    train_cfg = settings.train
    stores = PatchSet.load(ROOT / PATCH_DIR / "train"), PatchSet.load(ROOT / PATCH_DIR / "val")
    train_loader, val_loader = make_loaders(*make_datasets(head, train_cfg, settings.augment, *stores), train_cfg)

    def report(result: EpochResult) -> None:
        print(
            f"{label}: epoch {result.epoch + 1}  train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
            f"val dice {result.val_dice:.4f}  {result.seconds:.0f} s",
            flush=True,
        )

    started = time.perf_counter()
    result = fit(network, train_loader, val_loader, train_cfg, pick_device(), checkpoint_dir, callbacks=[report])
    seconds = time.perf_counter() - started
    network.load_state_dict(load_checkpoint(checkpoint_dir / BEST_CHECKPOINT)["model"])
    return result, seconds


@dataclasses.dataclass
class Prediction:
    image_id: str
    maps: np.ndarray
    truth: np.ndarray
    seconds: float


def val_images() -> list[tuple[str, Path, Path]]:
    """(id, image, labels) of the validation images of the split stage."""
    ids = read_split(ROOT / SPLIT_FILE)["val"]
    return [(i, ROOT / RAW_DIR / "train/images" / f"{i}.tif", ROOT / labels_dir("train") / f"{i}.tif") for i in ids]


def test_images() -> list[tuple[str, Path, Path]]:
    """(id, image, labels) of the official test images."""
    records = pair_files(raw_dirs(ROOT / RAW_DIR), "test")
    return [(r.image_id, r.image, ROOT / labels_dir("test") / f"{r.image_id}.tif") for r in records]


def predict_images(
    network: torch.nn.Module, images: list[tuple[str, Path, Path]], settings: Settings, desc: str
) -> list[Prediction]:
    """The network's maps of whole images (its `cfg.instance_head`'s), with the `eval` sliding-window values."""
    cfg = settings.eval
    window = cfg.window or settings.patch.size
    network.eval().to(pick_device())
    predictions = []
    for image_id, image_path, label_path in tqdm(images, desc=desc, unit="image", leave=False):
        image = read_rgb_image(image_path)
        started = time.perf_counter()
        maps = image_maps(network, image, cfg, window)
        predictions.append(Prediction(image_id, maps, read_label_image(label_path), time.perf_counter() - started))
    return predictions


def score_predictions(predictions: list[Prediction], head: InstanceHead, cfg: EvalConfig) -> tuple[dict, float]:
    """Per-image-mean scores with post-processing `cfg`, and the median seconds per image
    (network plus post-processing)."""
    scores, seconds = [], []
    for prediction in predictions:
        started = time.perf_counter()
        labels = instances_from_maps(prediction.maps, head, cfg)
        seconds.append(prediction.seconds + time.perf_counter() - started)
        scores.append(score_segmentation(prediction.truth, labels))
    return summarise_scores(scores)["per_image_mean"], statistics.median(seconds)


def parameter_count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
