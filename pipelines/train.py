"""DVC stage `train`: PatchUNet on the patch store, tracked in MLflow, its model logged in the run.

Writes models/patchunet.pt (best epoch by val Dice), models/run.json (the MLflow run, its logged
model and the tags its registered version will carry: `register` registers it once evaluated),
metrics/train.json and plots/train.csv. Checkpoints go to
models/checkpoints/ and to the run's artifacts after every epoch; `--resume` continues a killed
run from the last one, in the same MLflow run. A fresh run moves the checkpoints it finds into
models/checkpoints/previous-<time>/. Ctrl-C or SIGTERM ends the MLflow run KILLED; a run that
SIGKILL left RUNNING is ended FAILED by the next start.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import signal
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from patchunet import tracking
from patchunet.augment import build_augmentation
from patchunet.cli import run_stage
from patchunet.config import (
    AugmentConfig,
    MlflowConfig,
    ModelConfig,
    PatchConfig,
    SplitConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from patchunet.data import PatchDataset
from patchunet.errors import PatchUNetError
from patchunet.io import atomic_file, write_json
from patchunet.layout import CHECKPOINT_DIR, MODEL_FILE, PATCH_DIR, RUN_FILE, TRAIN_METRICS, TRAIN_PLOTS
from patchunet.model import PatchUNet, check_input_size, parameter_count, save_model
from patchunet.patches import PatchSet
from patchunet.tracking.provenance import dvc_output_hash, git_commit
from patchunet.train import (
    BEST_CHECKPOINT,
    HISTORY_COLUMNS,
    LAST_CHECKPOINT,
    EpochResult,
    fit,
    load_checkpoint,
    set_aside_checkpoints,
)

SECTIONS = {
    "model": ModelConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
    "patch": PatchConfig,
    "split": SplitConfig,
}
"""Every params.yaml section this run depends on: logged to MLflow, declared in dvc.yaml."""


ACTIVE_RUN_RECORD = CHECKPOINT_DIR / "active_run.json"
"""The MLflow run this stage is training, while it trains: see tracking.fail_abandoned_run."""


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", action="store_true", help="continue from models/checkpoints/last.pt")
    args = parser.parse_args()
    params = load_params(args.params)
    cfgs = {name: parse_section(cls, params, name) for name, cls in SECTIONS.items()}
    model_cfg, train_cfg = cfgs["model"], cfgs["train"]
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")

    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)  # fails now, not after an hour of training
    train_store, val_store = PatchSet.load(PATCH_DIR / "train"), PatchSet.load(PATCH_DIR / "val")
    patch_size = train_store.images.shape[1]
    check_input_size((patch_size, patch_size), model_cfg.size_multiple)
    augmentation = build_augmentation(cfgs["augment"]) if train_cfg.online_augment else None
    train_set = PatchDataset(train_store, augmentation, seed=train_cfg.seed, head=model_cfg.instance_head)
    val_set = PatchDataset(val_store, head=model_cfg.instance_head)
    abandoned = tracking.fail_abandoned_run(ACTIVE_RUN_RECORD)
    if abandoned:
        print(f"train: run {abandoned} was killed before it could end; marked FAILED in MLflow")
    run_id = resumable_run_id(model_cfg) if args.resume else None
    previous = None if args.resume else set_aside_checkpoints(CHECKPOINT_DIR)
    if previous:
        print(f"train: the checkpoints of the previous run are now in {previous}")
    torch.manual_seed(train_cfg.seed)
    model = PatchUNet(model_cfg)
    print(
        f"train: {parameter_count(model):,} parameters, {len(train_set)} train / {len(val_set)} val patches "
        f"of {patch_size} px, tracking {uri}"
    )

    with (
        tracking.run(mlflow_cfg.experiment, run_id=run_id) as active,
        tracking.recorded_as_running(active.info.run_id, ACTIVE_RUN_RECORD),
    ):
        if not args.resume:
            tracking.log_params({name: dataclasses.asdict(cfg) for name, cfg in cfgs.items()})
            tracking.log_params(
                {"dataset": {"patch_size": patch_size, "train_patches": len(train_set), "val_patches": len(val_set)}}
            )
            tracking.log_metrics({"model/parameters": parameter_count(model)})
            commit = git_commit(Path.cwd())
            tracking.set_tags(
                {
                    "git_commit": commit,
                    "mlflow.source.git.commit": commit,
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
            on_epoch_end=EpochLogger(train_cfg.epochs),
            progress=lambda batches, total, desc: tqdm(
                batches, total=total, desc=desc, unit="batch", leave=False, mininterval=1
            ),
            extra_state={"mlflow_run_id": active.info.run_id, "model_config": dataclasses.asdict(model_cfg)},
        )
        model.load_state_dict(load_checkpoint(CHECKPOINT_DIR / BEST_CHECKPOINT)["model"])
        model.cpu().eval()
        summary = {**result.summary(), "parameters": parameter_count(model)}
        tracking.log_metrics(
            {
                "best/val_dice": summary["val_dice"],
                "best/val_iou": summary["val_iou"],
                "best/epoch": summary["best_epoch"],
            }
        )
        example = np.zeros((1, 3, 2 * model_cfg.size_multiple, 2 * model_cfg.size_multiple), np.float32)
        model_uri = tracking.log_model(model, example, patch_size=patch_size, mlflow_run_id=active.info.run_id)
        version_tags = {
            "lr": train_cfg.lr,
            "batch_size": train_cfg.batch_size,
            "patch_size": patch_size,
            "base_channels": model_cfg.base_channels,
            "depth": model_cfg.depth,
            tracking.names.INSTANCE_HEAD_TAG: model_cfg.instance_head,
            "microns_per_pixel": model_cfg.microns_per_pixel,
            "val_dice": round(summary["val_dice"], 4),
            "val_iou": round(summary["val_iou"], 4),
            "best_epoch": summary["best_epoch"],
        }

    save_model(model, MODEL_FILE, patch_size=patch_size, mlflow_run_id=active.info.run_id)
    write_json(
        RUN_FILE,
        {
            "run_id": active.info.run_id,
            "tracking_uri": uri,
            "model_uri": model_uri,
            "version_tags": version_tags,
        },
    )
    write_json(TRAIN_METRICS, summary)
    with atomic_file(TRAIN_PLOTS) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(result.history_rows())
    print(
        f"train: best epoch {summary['best_epoch']} (counting from 0) of {summary['epochs_run']}: val dice "
        f"{summary['val_dice']:.4f}, val iou {summary['val_iou']:.4f} on the val patches; model logged "
        f"to run {active.info.run_id}, registered by `register` once evaluated"
    )


def stop_on_sigterm(signum: int, frame: object) -> None:
    """`kill` ends the run as Ctrl-C does: MLflow marks it KILLED, and the checkpoints stay."""
    raise KeyboardInterrupt


def resumable_run_id(model_cfg: ModelConfig) -> str:
    """The MLflow run of models/checkpoints/last.pt, refusing a checkpoint of another model shape."""
    checkpoint = load_checkpoint(CHECKPOINT_DIR / LAST_CHECKPOINT)
    if checkpoint.get("model_config") != dataclasses.asdict(model_cfg):
        raise PatchUNetError(
            f"{CHECKPOINT_DIR / LAST_CHECKPOINT}: was trained with model params {checkpoint.get('model_config')}, "
            f"params.yaml now has {dataclasses.asdict(model_cfg)}: restore them, or train without --resume"
        )
    if not checkpoint.get("mlflow_run_id"):
        raise PatchUNetError(f"{CHECKPOINT_DIR / LAST_CHECKPOINT}: names no MLflow run; train without --resume")
    return checkpoint["mlflow_run_id"]


class EpochLogger:
    """After each epoch: metrics to MLflow (step = epoch), checkpoints as artifacts, one line out."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.best_dice = -1.0

    def __call__(self, result: EpochResult) -> None:
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
        tracking.log_artifact(CHECKPOINT_DIR / LAST_CHECKPOINT, artifact_path="checkpoints")
        if result.val_dice > self.best_dice:
            self.best_dice = result.val_dice
            tracking.log_artifact(CHECKPOINT_DIR / BEST_CHECKPOINT, artifact_path="checkpoints")
        print(
            f"epoch {result.epoch + 1:3d}/{self.epochs}  train loss {result.train_loss:.4f}  "
            f"val loss {result.val_loss:.4f}  val dice {result.val_dice:.4f}  val iou {result.val_iou:.4f}  "
            f"lr {result.lr:.1e}  {result.seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    run_stage(main)
