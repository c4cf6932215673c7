"""DVC stage `train`: PatchUNet on the patch set, tracked in MLflow, its model logged in the run.

Writes models/patchunet.pt (best epoch by val Dice), models/run.json (the MLflow run, its logged
model and the tags its registered version will carry: `register` registers it once evaluated),
metrics/train.json and plots/train.csv. Checkpoints go to
models/checkpoints/ and to the run's artifacts after every epoch; `--resume` continues a killed
run from the last one, in the same MLflow run. A fresh run moves the checkpoints it finds into
models/checkpoints/previous-<time>/, keeping the last 3 such folders. Ctrl-C or SIGTERM ends the
MLflow run KILLED; a run that SIGKILL left RUNNING is ended FAILED by the next start. A loss that
diverges (not finite, or 10x the untrained network's) ends the run FAILED, and writes no model.
One training at a time per checkout: a second is refused while models/checkpoints/train.lock is held.

Under `torchrun --nproc_per_node N` (`patchunet train --nproc N`) it trains with
DistributedDataParallel, `train.batch_size` split over the N processes; rank 0 alone prints, logs
to MLflow and writes the checkpoints and outputs, which are as one process's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from patchunet import tracking
from patchunet.core.config import (
    AugmentConfig,
    EvalConfig,
    MlflowConfig,
    ModelConfig,
    PatchConfig,
    SplitConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from patchunet.core.console import log_to_stdout, run_stage
from patchunet.core.files import read_json_value, write_csv, write_json
from patchunet.core.locking import sole_holder
from patchunet.core.paths import (
    CHECKPOINT_DIR,
    DATASET_FILE,
    MODEL_FILE,
    PATCH_DIR,
    RUN_FILE,
    TRAIN_METRICS,
    TRAIN_PLOTS,
)
from patchunet.data.patches import PatchSet
from patchunet.model.unet import check_input_size, parameter_count, save_model
from patchunet.tracking.provenance import dvc_output_hash, git_commit
from patchunet.training.builder import build_training
from patchunet.training.checkpoints import (
    BEST_CHECKPOINT,
    KEEP_PREVIOUS,
    load_checkpoint,
    resumable_run_id,
    set_aside_checkpoints,
)
from patchunet.training.distributed import Ranks, process_group
from patchunet.training.lifetime import die_with_parent
from patchunet.training.loop import fit
from patchunet.training.run_log import log_best, log_run_inputs
from patchunet.training.val_scoring import WholeImageAJI

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
TRAIN_LOCK = CHECKPOINT_DIR / "train.lock"
"""Held by the training process of this checkout while it runs (see locking.sole_holder)."""


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    if "LOCAL_RANK" in os.environ:  # a rank of torchrun's: stop (rank 0: end its run KILLED) if torchrun dies
        die_with_parent(signal.SIGTERM, os.getppid())
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", action="store_true", help="continue from models/checkpoints/last.pt")
    args = parser.parse_args()
    with process_group() as ranks:
        if ranks.is_main:
            log_to_stdout()
            with sole_holder(TRAIN_LOCK, "a training"):
                train(args, ranks)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no MLflow run here to end: torchrun may just stop it
            follow(args, ranks)


def train(args: argparse.Namespace, ranks: Ranks) -> None:
    """The whole stage, on the only process or on rank 0 of torchrun's."""
    params = load_params(args.params)
    cfgs = {name: parse_section(cls, params, name) for name, cls in SECTIONS.items()}
    model_cfg, train_cfg = cfgs["model"], cfgs["train"]
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")
    eval_cfg = parse_section(EvalConfig, params, "eval")

    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)  # fails now, not after an hour of training
    train_patches, val_patches = patch_sets(train_cfg)
    patch_size = train_patches.images.shape[1]
    check_input_size((patch_size, patch_size), model_cfg.size_multiple)
    val_scorer = None
    if train_cfg.select_by == "val_aji":
        val_scorer = WholeImageAJI(val_patches, eval_cfg, eval_cfg.window_for(patch_size, model_cfg.size_multiple))
    abandoned = tracking.fail_abandoned_run(ACTIVE_RUN_RECORD)
    if abandoned:
        print(f"train: run {abandoned} was killed before it could end; marked FAILED in MLflow")
    run_id = resumable_run_id(CHECKPOINT_DIR, model_cfg, ranks.world_size) if args.resume else None
    previous = None if args.resume else set_aside_checkpoints(CHECKPOINT_DIR)
    if previous:
        print(
            f"train: the checkpoints of the previous run are now in {previous} "
            f"(the {KEEP_PREVIOUS} most recent {previous.parent}/previous-* folders are kept)"
        )
    training = build_training(
        model_cfg, train_cfg, cfgs["augment"], train_patches, val_patches, checkpoint_dir=CHECKPOINT_DIR, ranks=ranks
    )
    ranks.barrier()  # every check passed: the other ranks may start (see `follow`)
    model = training.model
    patch_counts = {"train_patches": len(train_patches.index), "val_patches": len(val_patches.index)}
    processes = f", {ranks.world_size} DDP processes on {ranks.device.type}" if ranks.world_size > 1 else ""
    print(
        f"train: {parameter_count(model):,} parameters, {patch_counts['train_patches']} train / "
        f"{patch_counts['val_patches']} val patches of {patch_size} px, tracking {uri}{processes}"
    )
    select = {"val_aji": "whole-image val AJI", "val_dice": "val patch Dice", "last": "being the last"}
    refit = "; refit: the val images train too, so val scores are on seen images" if train_cfg.refit else ""
    print(f"train: {train_cfg.schedule} schedule, best epoch by {select[train_cfg.select_by]}{refit}")

    with (
        tracking.run(mlflow_cfg.experiment, run_id=run_id) as active,
        tracking.recorded_as_running(active.run_id, ACTIVE_RUN_RECORD),
    ):
        if not args.resume:
            dataset = {"patch_size": patch_size, **patch_counts, **fetched_layout()}
            commit, data_hash = git_commit(Path.cwd()), dvc_output_hash(Path("dvc.lock"), str(PATCH_DIR))
            log_run_inputs(cfgs, dataset, parameter_count(model), commit, data_hash)
        result = fit(
            model,
            training.train_loader,
            training.val_loader,
            train_cfg,
            ranks.device,
            CHECKPOINT_DIR,
            resume=args.resume,
            callbacks=[training.log_epoch, stop_if_asked],
            progress=lambda batches, total, desc: stoppable(
                tqdm(batches, total=total, desc=desc, unit="batch", leave=False, mininterval=1)
            ),
            extra_state={"mlflow_run_id": active.run_id, "model_config": dataclasses.asdict(model_cfg)},
            ranks=ranks,
            val_scorer=val_scorer,
        )
        model.load_state_dict(load_checkpoint(CHECKPOINT_DIR / BEST_CHECKPOINT)["model"])
        model.cpu().eval()
        summary = {**result.summary(), "parameters": parameter_count(model)}
        log_best(summary)
        example = np.zeros((1, 3, 2 * model_cfg.size_multiple, 2 * model_cfg.size_multiple), np.float32)
        model_uri = tracking.log_model(model, example, patch_size=patch_size, mlflow_run_id=active.run_id)
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
            **({"val_aji": round(summary["val_aji"], 4)} if "val_aji" in summary else {}),
            "best_epoch": summary["best_epoch"],
        }

    save_model(model, MODEL_FILE, patch_size=patch_size, mlflow_run_id=active.run_id)
    write_json(
        RUN_FILE,
        {
            "run_id": active.run_id,
            "tracking_uri": uri,
            "model_uri": model_uri,
            "version_tags": version_tags,
        },
    )
    write_json(TRAIN_METRICS, summary)
    write_csv(TRAIN_PLOTS, result.history_rows(), result.history_columns)
    print(
        f"train: best epoch {summary['best_epoch']} (counting from 0) of {summary['epochs_run']}: val dice "
        f"{summary['val_dice']:.4f}, val iou {summary['val_iou']:.4f} on the val patches"
        + (f", val aji {summary['val_aji']:.4f} on the whole val images" if "val_aji" in summary else "")
        + f", {result.precision}; model logged "
        f"to run {active.run_id}, registered by `register` once evaluated"
    )


def patch_sets(train_cfg: TrainConfig) -> tuple[PatchSet, PatchSet]:
    """The train and val patch sets; with train.refit, the train set holds the val patches too."""
    train, val = PatchSet.load(PATCH_DIR / "train"), PatchSet.load(PATCH_DIR / "val")
    return (train.joined(val) if train_cfg.refit else train), val


def fetched_layout() -> dict[str, str]:
    """{"layout": "monuseg" or "generic"} as fetch found it, for the model card; {} where fetch wrote no
    dataset.json (a project whose patches came from elsewhere)."""
    return {"layout": read_json_value(DATASET_FILE, "layout")} if DATASET_FILE.is_file() else {}


def follow(args: argparse.Namespace, ranks: Ranks) -> None:
    """Rank 1 and up of torchrun's: train beside rank 0, which checks, logs and writes everything.

    Waits first for rank 0 to check params, patches, store and checkpoint: when a check fails,
    rank 0 alone says so and exits, and torchrun stops this rank where it waits.
    """
    ranks.barrier()
    params = load_params(args.params)
    cfgs = {name: parse_section(cls, params, name) for name, cls in SECTIONS.items()}
    training = build_training(cfgs["model"], cfgs["train"], cfgs["augment"], *patch_sets(cfgs["train"]), ranks=ranks)
    fit(
        training.model,
        training.train_loader,
        training.val_loader,
        cfgs["train"],
        ranks.device,
        CHECKPOINT_DIR,
        resume=args.resume,
        ranks=ranks,
    )


STOP_ASKED = {signal.SIGTERM: False}
"""Whether SIGTERM came: see `stop_on_sigterm`."""


def stop_on_sigterm(signum: int, frame: object) -> None:
    """`kill` ends the run as Ctrl-C does: MLflow marks it KILLED, and the checkpoints stay.

    Python drops an exception a signal handler raises inside some callbacks (the at-fork hooks that
    run as a DataLoader starts its workers, every epoch): the flag makes the next batch, or the end of
    the epoch, raise it again, so that the training stops anyway."""
    STOP_ASKED[signal.SIGTERM] = True
    raise KeyboardInterrupt


def stop_if_asked(*_: object) -> None:
    if STOP_ASKED[signal.SIGTERM]:
        raise KeyboardInterrupt


def stoppable(batches: Iterable) -> Iterator:
    """`batches`, stopping before the next one once SIGTERM has come."""
    for batch in batches:
        stop_if_asked()
        yield batch


if __name__ == "__main__":
    run_stage(main)
