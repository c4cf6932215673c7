"""Stage `train`: PatchUNet on the patch set, tracked in MLflow, its model logged in the run.

Writes models/patchunet.pt (the best epoch by `train.select_by`), models/run.json (the MLflow run,
its logged model and the tags its registered version will carry: `register` registers it once
evaluated), metrics/train.json and plots/train.csv. Checkpoints go to models/checkpoints/ and to
the run's artifacts after every epoch; `resume` continues a killed run from the last one, in the
same MLflow run. A fresh run moves the checkpoints it finds into models/checkpoints/previous-<time>/,
keeping the last 3 such folders. Ctrl-C, or SIGTERM with `stop_on_sigterm` as its handler, ends the
MLflow run KILLED; a run that SIGKILL left RUNNING is ended FAILED by the next start. A loss that
diverges (not finite, or 10x the untrained network's) ends the run FAILED, and writes no model.
One training at a time per project: a second is refused while models/checkpoints/train.lock is held.

Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel, `train.batch_size` split
over the processes; rank 0 alone prints, logs to MLflow and writes the checkpoints and outputs,
which are as one process's.
"""

from __future__ import annotations

import dataclasses
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
    parse_section,
)
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
from patchunet.training.builder import Training, build_training
from patchunet.training.checkpoints import (
    BEST_CHECKPOINT,
    KEEP_PREVIOUS,
    load_checkpoint,
    resumable_run_id,
    set_aside_checkpoints,
)
from patchunet.training.distributed import Ranks, process_group
from patchunet.training.loop import FitResult, fit
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
"""Held by the training process of this project while it runs (see locking.sole_holder)."""


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    run_id: str
    model_uri: str
    """The model logged in the run, which `register` registers."""
    metrics: dict
    """What metrics/train.json holds: the best epoch's val scores, epochs run, parameters."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What rank 0 checked and built before the first epoch."""

    training: Training
    patch_counts: dict[str, int]
    patch_size: int
    val_scorer: WholeImageAJI | None
    run_id: str | None
    """The MLflow run a resumed training continues; None for a fresh one."""


def run(params: dict, root: Path, *, resume: bool = False) -> TrainSummary | None:
    """Train, on this process or as one rank of torchrun's; the summary on rank 0, None on the others.

    `resume`: continue from models/checkpoints/last.pt, in its MLflow run.
    """
    with process_group() as ranks:
        if not ranks.is_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no MLflow run here to end: torchrun may just stop it
            follow(params, root, ranks, resume=resume)
            return None
        with sole_holder(root / TRAIN_LOCK, "a training"):
            return train(params, root, ranks, resume=resume)


def train(params: dict, root: Path, ranks: Ranks, *, resume: bool) -> TrainSummary:
    """The whole stage, on the only process or on rank 0 of torchrun's."""
    cfgs = {name: parse_section(cls, params, name) for name, cls in SECTIONS.items()}
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")
    eval_cfg = parse_section(EvalConfig, params, "eval")
    uri = tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri)
    tracking.connect(uri)  # fails now, not after an hour of training
    prepared = prepare(cfgs, eval_cfg, root, ranks, resume=resume)
    ranks.barrier()  # every check passed: the other ranks may start (see `follow`)
    announce(prepared, cfgs["train"], uri, ranks)

    model = prepared.training.model
    with (
        tracking.run(mlflow_cfg.experiment, run_id=prepared.run_id) as active,
        tracking.recorded_as_running(active.run_id, root / ACTIVE_RUN_RECORD),
    ):
        if not resume:
            dataset = {"patch_size": prepared.patch_size, **prepared.patch_counts, **fetched_layout(root)}
            commit, data_hash = git_commit(root), dvc_output_hash(root / "dvc.lock", str(PATCH_DIR))
            log_run_inputs(cfgs, dataset, parameter_count(model), commit, data_hash)
        result = fit_model(prepared, cfgs, root, ranks, active.run_id, resume=resume)
        model.load_state_dict(load_checkpoint(root / CHECKPOINT_DIR / BEST_CHECKPOINT)["model"])
        model.cpu().eval()
        metrics = {**result.summary(), "parameters": parameter_count(model)}
        log_best(metrics)
        size = 2 * cfgs["model"].size_multiple
        example = np.zeros((1, 3, size, size), np.float32)
        model_uri = tracking.log_model(model, example, patch_size=prepared.patch_size, mlflow_run_id=active.run_id)

    save_model(model, root / MODEL_FILE, patch_size=prepared.patch_size, mlflow_run_id=active.run_id)
    tags = version_tags(cfgs, prepared.patch_size, metrics)
    write_json(
        root / RUN_FILE, {"run_id": active.run_id, "tracking_uri": uri, "model_uri": model_uri, "version_tags": tags}
    )
    write_json(root / TRAIN_METRICS, metrics)
    write_csv(root / TRAIN_PLOTS, result.history_rows(), result.history_columns)
    print(
        f"train: best epoch {metrics['best_epoch']} (counting from 0) of {metrics['epochs_run']}: val dice "
        f"{metrics['val_dice']:.4f}, val iou {metrics['val_iou']:.4f} on the val patches"
        + (f", val aji {metrics['val_aji']:.4f} on the whole val images" if "val_aji" in metrics else "")
        + f", {result.precision}; model logged "
        f"to run {active.run_id}, registered by `register` once evaluated"
    )
    return TrainSummary(active.run_id, model_uri, metrics)


def prepare(cfgs: dict, eval_cfg: EvalConfig, root: Path, ranks: Ranks, *, resume: bool) -> Prepared:
    """Check the patches, the model shape and the checkpoints, then build the model and loaders."""
    model_cfg, train_cfg = cfgs["model"], cfgs["train"]
    train_patches, val_patches = patch_sets(root, train_cfg)
    patch_size = train_patches.images.shape[1]
    check_input_size((patch_size, patch_size), model_cfg.size_multiple)
    val_scorer = None
    if train_cfg.select_by == "val_aji":
        val_scorer = WholeImageAJI(val_patches, eval_cfg, eval_cfg.window_for(patch_size, model_cfg.size_multiple))
    checkpoint_dir = root / CHECKPOINT_DIR
    abandoned = tracking.fail_abandoned_run(root / ACTIVE_RUN_RECORD)
    if abandoned:
        print(f"train: run {abandoned} was killed before it could end; marked FAILED in MLflow")
    run_id = resumable_run_id(checkpoint_dir, model_cfg, ranks.world_size) if resume else None
    previous = None if resume else set_aside_checkpoints(checkpoint_dir)
    if previous:
        print(
            f"train: the checkpoints of the previous run are now in {previous} "
            f"(the {KEEP_PREVIOUS} most recent {previous.parent}/previous-* folders are kept)"
        )
    training = build_training(
        model_cfg, train_cfg, cfgs["augment"], train_patches, val_patches, checkpoint_dir=checkpoint_dir, ranks=ranks
    )
    patch_counts = {"train_patches": len(train_patches.index), "val_patches": len(val_patches.index)}
    return Prepared(training, patch_counts, patch_size, val_scorer, run_id)


def announce(prepared: Prepared, train_cfg: TrainConfig, uri: str, ranks: Ranks) -> None:
    """Two lines: the network and its patches, then the schedule and how the best epoch is chosen."""
    counts = prepared.patch_counts
    processes = f", {ranks.world_size} DDP processes on {ranks.device.type}" if ranks.world_size > 1 else ""
    print(
        f"train: {parameter_count(prepared.training.model):,} parameters, {counts['train_patches']} train / "
        f"{counts['val_patches']} val patches of {prepared.patch_size} px, tracking {uri}{processes}"
    )
    select = {"val_aji": "whole-image val AJI", "val_dice": "val patch Dice", "last": "being the last"}
    refit = "; refit: the val images train too, so val scores are on seen images" if train_cfg.refit else ""
    print(f"train: {train_cfg.schedule} schedule, best epoch by {select[train_cfg.select_by]}{refit}")


def fit_model(prepared: Prepared, cfgs: dict, root: Path, ranks: Ranks, run_id: str, *, resume: bool) -> FitResult:
    """`fit` on rank 0: per-epoch lines and MLflow metrics, a progress bar SIGTERM can stop."""
    training = prepared.training
    return fit(
        training.model,
        training.train_loader,
        training.val_loader,
        cfgs["train"],
        ranks.device,
        root / CHECKPOINT_DIR,
        resume=resume,
        callbacks=[training.log_epoch, stop_if_asked],
        progress=lambda batches, total, desc: stoppable(
            tqdm(batches, total=total, desc=desc, unit="batch", leave=False, mininterval=1)
        ),
        extra_state={"mlflow_run_id": run_id, "model_config": dataclasses.asdict(cfgs["model"])},
        ranks=ranks,
        val_scorer=prepared.val_scorer,
    )


def version_tags(cfgs: dict, patch_size: int, metrics: dict) -> dict:
    """The tags `register` puts on the model's version: how it was trained and its val scores."""
    model_cfg, train_cfg = cfgs["model"], cfgs["train"]
    return {
        "lr": train_cfg.lr,
        "batch_size": train_cfg.batch_size,
        "patch_size": patch_size,
        "base_channels": model_cfg.base_channels,
        "depth": model_cfg.depth,
        tracking.names.INSTANCE_HEAD_TAG: model_cfg.instance_head,
        "microns_per_pixel": model_cfg.microns_per_pixel,
        "val_dice": round(metrics["val_dice"], 4),
        "val_iou": round(metrics["val_iou"], 4),
        **({"val_aji": round(metrics["val_aji"], 4)} if "val_aji" in metrics else {}),
        "best_epoch": metrics["best_epoch"],
    }


def patch_sets(root: Path, train_cfg: TrainConfig) -> tuple[PatchSet, PatchSet]:
    """The train and val patch sets; with train.refit, the train set holds the val patches too."""
    train, val = PatchSet.load(root / PATCH_DIR / "train"), PatchSet.load(root / PATCH_DIR / "val")
    return (train.joined(val) if train_cfg.refit else train), val


def fetched_layout(root: Path) -> dict[str, str]:
    """{"layout": "monuseg" or "generic"} as fetch found it, for the model card; {} where fetch wrote no
    dataset.json (a project whose patches came from elsewhere)."""
    dataset_file = root / DATASET_FILE
    return {"layout": read_json_value(dataset_file, "layout")} if dataset_file.is_file() else {}


def follow(params: dict, root: Path, ranks: Ranks, *, resume: bool) -> None:
    """Rank 1 and up of torchrun's: train beside rank 0, which checks, logs and writes everything.

    Waits first for rank 0 to check params, patches, store and checkpoint: when a check fails,
    rank 0 alone says so and exits, and torchrun stops this rank where it waits.
    """
    ranks.barrier()
    cfgs = {name: parse_section(cls, params, name) for name, cls in SECTIONS.items()}
    training = build_training(
        cfgs["model"], cfgs["train"], cfgs["augment"], *patch_sets(root, cfgs["train"]), ranks=ranks
    )
    fit(
        training.model,
        training.train_loader,
        training.val_loader,
        cfgs["train"],
        ranks.device,
        root / CHECKPOINT_DIR,
        resume=resume,
        ranks=ranks,
    )


STOP_ASKED = {signal.SIGTERM: False}
"""Whether SIGTERM came: see `stop_on_sigterm`."""


def stop_on_sigterm(signum: int, frame: object) -> None:
    """The SIGTERM handler of a training process: `kill` ends the run as Ctrl-C does, MLflow marks
    it KILLED, and the checkpoints stay.

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
