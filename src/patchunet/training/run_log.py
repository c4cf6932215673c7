"""What a training run records in MLflow: its inputs once, then each epoch (with one log line)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchunet import tracking
from patchunet.tracking import names
from patchunet.training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT
from patchunet.training.loop import EpochResult

log = logging.getLogger(__name__)


class EpochLogger:
    """After each epoch: metrics to the active MLflow run (step = epoch), the checkpoints in
    `checkpoint_dir` as its artifacts when one is given, and one line to the log."""

    def __init__(self, epochs: int, label: str = "", checkpoint_dir: Path | None = None) -> None:
        self.epochs, self.label, self.checkpoint_dir = epochs, label, checkpoint_dir

    def __call__(self, result: EpochResult) -> None:
        tracking.log_metrics(
            {
                names.TRAIN_LOSS: result.train_loss,
                names.VAL_LOSS: result.val_loss,
                names.VAL_DICE: result.val_dice,
                names.VAL_IOU: result.val_iou,
                names.LEARNING_RATE: result.lr,
                names.EPOCH_SECONDS: result.seconds,
                **({names.VAL_AJI: result.val_aji} if result.val_aji is not None else {}),
            },
            step=result.epoch,
        )
        if self.checkpoint_dir is not None:
            tracking.log_artifact(self.checkpoint_dir / LAST_CHECKPOINT, artifact_path="checkpoints")
            if result.is_best:
                tracking.log_artifact(self.checkpoint_dir / BEST_CHECKPOINT, artifact_path="checkpoints")
        aji = f"  val aji {result.val_aji:.4f}" if result.val_aji is not None else ""
        log.info(
            f"{self.label}epoch {result.epoch + 1:3d}/{self.epochs}  train loss {result.train_loss:.4f}  "
            f"val loss {result.val_loss:.4f}  val dice {result.val_dice:.4f}  val iou {result.val_iou:.4f}{aji}  "
            f"lr {result.lr:.1e}  {result.seconds:.0f} s{'  best' if result.is_best else ''}"
        )


def log_run_inputs(
    sections: Mapping[str, Any], dataset: Mapping[str, int], parameters: int, commit: str, data_hash: str
) -> None:
    """A fresh run's params (its params.yaml `sections`, as config dataclasses, and the `dataset`
    sizes), model size, and provenance tags: the git commit (also where MLflow's UI looks for it)
    and the DVC hash of its data. The model's scale is logged under the params.yaml key that
    declares it, data.microns_per_pixel."""
    params = {name: dataclasses.asdict(cfg) for name, cfg in sections.items()}
    if "model" in params:
        section, key = names.MICRONS_PER_PIXEL_PARAM.split(".")
        params[section] = {key: params["model"].pop("microns_per_pixel")}
    tracking.log_params(params)
    tracking.log_params({"dataset": dataset})
    tracking.log_metrics({names.PARAMETER_COUNT: parameters})
    tracking.set_tags({names.GIT_COMMIT: commit, names.MLFLOW_GIT_COMMIT: commit, names.DVC_DATA_HASH: data_hash})


def log_best(summary: Mapping[str, Any]) -> None:
    """The best epoch's scores (`FitResult.summary`), once training ends."""
    tracking.log_metrics(
        {
            names.BEST_VAL_DICE: summary["val_dice"],
            names.BEST_VAL_IOU: summary["val_iou"],
            **({names.BEST_VAL_AJI: summary["val_aji"]} if "val_aji" in summary else {}),
            names.BEST_EPOCH: summary["best_epoch"],
        }
    )
