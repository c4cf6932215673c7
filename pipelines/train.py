"""DVC stage `train`: PatchUNet on the patch store, tracked in MLflow and registered.

Writes models/patchunet.pt (best epoch by val Dice), models/run.json (the MLflow run and model
version, for the evaluate stage), metrics/train.json and plots/train.csv. Checkpoints go to
models/checkpoints/; `--resume` continues a killed run from the last one, in the same MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from patchunet import tracking
from patchunet.augment import build_augmentation
from patchunet.cli import run_stage
from patchunet.config import AugmentConfig, MlflowConfig, ModelConfig, TrainConfig, load_params, parse_section
from patchunet.data import PatchDataset
from patchunet.io import atomic_file
from patchunet.model import PatchUNet, check_input_size, parameter_count
from patchunet.patches import PatchSet
from patchunet.provenance import dvc_output_hash, git_commit
from patchunet.train import BEST_CHECKPOINT, LAST_CHECKPOINT, EpochResult, FitResult, fit, load_checkpoint

PATCH_DIR = Path("data/processed/patches")
MODEL_FILE = Path("models/patchunet.pt")
RUN_FILE = Path("models/run.json")
CHECKPOINT_DIR = Path("models/checkpoints")
METRICS_FILE = Path("metrics/train.json")
PLOTS_FILE = Path("plots/train.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", action="store_true", help="continue from models/checkpoints/last.pt")
    args = parser.parse_args()
    params = load_params(args.params)
    model_cfg = parse_section(ModelConfig, params, "model")
    train_cfg = parse_section(TrainConfig, params, "train")
    augment_cfg = parse_section(AugmentConfig, params, "augment")
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")

    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)  # fails now, not after an hour of training
    train_store, val_store = PatchSet.load(PATCH_DIR / "train"), PatchSet.load(PATCH_DIR / "val")
    patch_size = train_store.images.shape[1]
    check_input_size((patch_size, patch_size), model_cfg.size_multiple)
    augmentation = build_augmentation(augment_cfg) if train_cfg.online_augment else None
    train_set = PatchDataset(train_store, augmentation, seed=train_cfg.seed)
    val_set = PatchDataset(val_store)

    run_id = load_checkpoint(CHECKPOINT_DIR / LAST_CHECKPOINT)["mlflow_run_id"] if args.resume else None
    torch.manual_seed(train_cfg.seed)
    model = PatchUNet(model_cfg)
    print(
        f"train: {parameter_count(model):,} parameters, {len(train_set)} train / {len(val_set)} val patches "
        f"of {patch_size} px, tracking {uri}"
    )

    with tracking.run(mlflow_cfg.experiment, run_id=run_id) as active:
        if not args.resume:
            tracking.log_params(
                {
                    "model": dataclasses.asdict(model_cfg),
                    "train": dataclasses.asdict(train_cfg),
                    "augment": dataclasses.asdict(augment_cfg),
                    "data": {"patch_size": patch_size, "train_patches": len(train_set), "val_patches": len(val_set)},
                }
            )
            tracking.log_metrics({"model/parameters": parameter_count(model)})
            tracking.set_tags(
                {
                    "git_commit": git_commit(Path.cwd()),
                    "dvc_data_hash": dvc_output_hash(Path("dvc.lock"), str(PATCH_DIR)),
                }
            )
        result = fit(
            model,
            train_set,
            val_set,
            train_cfg,
            CHECKPOINT_DIR,
            resume=args.resume,
            on_epoch_end=lambda r: log_epoch(r, train_cfg.epochs),
            progress=lambda batches, total, desc: tqdm(
                batches, total=total, desc=desc, unit="batch", leave=False, mininterval=1
            ),
            extra_state={"mlflow_run_id": active.info.run_id},
        )
        model.load_state_dict(load_checkpoint(CHECKPOINT_DIR / BEST_CHECKPOINT)["model"])
        model.cpu().eval()
        publish(model, model_cfg, train_cfg, mlflow_cfg, result, patch_size, active.info.run_id, uri)


def log_epoch(result: EpochResult, epochs: int) -> None:
    tracking.log_metrics(
        {
            "train/loss": result.train_loss,
            "val/loss": result.val_loss,
            "val/dice": result.val_dice,
            "val/iou": result.val_iou,
            "lr": result.lr,
            "time/epoch_seconds": result.seconds,
        },
        step=result.epoch,
    )
    print(
        f"epoch {result.epoch + 1:3d}/{epochs}  train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
        f"val dice {result.val_dice:.4f}  val iou {result.val_iou:.4f}  lr {result.lr:.1e}  {result.seconds:.0f} s",
        flush=True,
    )


def publish(
    model,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    mlflow_cfg: MlflowConfig,
    result: FitResult,
    patch_size: int,
    run_id: str,
    uri: str,
) -> None:
    """Write the stage's outs, log checkpoints and the model to MLflow, and register a version."""
    best = result.best
    summary = {
        "best_epoch": best.epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "val_dice": best.val_dice,
        "val_iou": best.val_iou,
        "val_loss": best.val_loss,
        "train_loss": best.train_loss,
        "parameters": parameter_count(model),
    }
    tracking.log_metrics({"best/val_dice": best.val_dice, "best/val_iou": best.val_iou, "best/epoch": best.epoch})
    for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
        tracking.log_artifact(CHECKPOINT_DIR / name, artifact_path="checkpoints")
    example = np.zeros((1, 3, model_cfg.size_multiple * 2, model_cfg.size_multiple * 2), np.float32)
    model_uri = tracking.log_pytorch_model(model, example)
    version = tracking.register_model(
        model_uri,
        mlflow_cfg.registered_model,
        tags={
            "lr": train_cfg.lr,
            "batch_size": train_cfg.batch_size,
            "patch_size": patch_size,
            "base_channels": model_cfg.base_channels,
            "depth": model_cfg.depth,
            "val_dice": round(best.val_dice, 4),
            "val_iou": round(best.val_iou, 4),
            "best_epoch": best.epoch,
        },
    )

    with atomic_file(MODEL_FILE) as tmp:
        torch.save(
            {
                "model_config": dataclasses.asdict(model_cfg),
                "state_dict": model.state_dict(),
                "patch_size": patch_size,
                "mlflow_run_id": run_id,
            },
            tmp,
        )
    write_json(
        RUN_FILE,
        {
            "run_id": run_id,
            "tracking_uri": uri,
            "registered_model": mlflow_cfg.registered_model,
            "version": int(version.version),
            "model_uri": model_uri,
        },
    )
    write_json(METRICS_FILE, summary)
    with atomic_file(PLOTS_FILE) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr"])
        writer.writeheader()
        for row in result.history:
            writer.writerow({k: v for k, v in dataclasses.asdict(row).items() if k != "seconds"})
    print(
        f"train: best epoch {best.epoch + 1} of {len(result.history)}: val dice {best.val_dice:.4f}, "
        f"val iou {best.val_iou:.4f} (val patches); registered {mlflow_cfg.registered_model} "
        f"version {version.version}, run {run_id}"
    )


def write_json(path: Path, content: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
