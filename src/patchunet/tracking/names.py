"""Every MLflow name the project writes or reads: metrics, tags, params, aliases and artifacts.

The store is a contract between the stages that write it and the dashboard, `register` and
`predict` that read it; a name spelled twice drifts, so each is spelled here once.
"""

from __future__ import annotations

# --- metrics of a training run, per epoch (step = epoch) ---
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_DICE = "val/dice"
VAL_IOU = "val/iou"
VAL_AJI = "val/aji"  # whole val images, with the eval post-processing (train.select_by val_aji)
LEARNING_RATE = "lr"
EPOCH_SECONDS = "time/epoch_seconds"

# --- metrics of a training run, once ---
PARAMETER_COUNT = "model/parameters"
BEST_VAL_DICE = "best/val_dice"
BEST_VAL_IOU = "best/val_iou"
BEST_VAL_AJI = "best/val_aji"
BEST_EPOCH = "best/epoch"

# --- metrics the evaluate stage adds to the training run ---
TEST_PREFIX = "test/"
TEST_DATASET_PREFIX = "test/dataset/"
TEST_SECONDS_PER_IMAGE = "test/seconds_per_image"


def score_metric(score: str) -> str:
    """'aji' -> 'test/aji': the per-image mean of a test score."""
    return f"{TEST_PREFIX}{score}"


def dataset_score_metric(score: str) -> str:
    """'aji' -> 'test/dataset/aji': the test score of all images pooled."""
    return f"{TEST_DATASET_PREFIX}{score}"


# --- tags of a training run ---
GIT_COMMIT = "git_commit"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own, shown in its UI
DVC_DATA_HASH = "dvc_data_hash"
PARENT_RUN = "mlflow.parentRunId"  # set by MLflow on a child run
DVC_EXPERIMENT = "dvc.experiment"  # the name `dvc exp show` lists it under, when run by `dvc exp run`
DVC_BASELINE_REV = "dvc.baseline_rev"  # the commit it branches from: names are unique per baseline

# --- tuning: tags and metrics of the study's parent run and of each trial's child run ---
OPTUNA_STUDY = "optuna.study"
OPTUNA_TRIAL_NUMBER = "optuna.trial_number"
OPTUNA_STATE = "optuna.state"
OBJECTIVE = "objective/val_dice"  # a complete trial's value; a pruned trial has only VAL_DICE per epoch
TRIAL_PARAM = "trial.number"
BEST_TRIAL = "best/trial"
TRIALS_COMPLETE = "trials/complete"
TRIALS_PRUNED = "trials/pruned"

# --- params of a training run: the params.yaml sections, flattened ---
LR_PARAM = "train.lr"
EPOCHS_PARAM = "train.epochs"
PATCH_SIZE_PARAM = "patch.size"
BASE_CHANNELS_PARAM = "model.base_channels"
DEPTH_PARAM = "model.depth"
INSTANCE_HEAD_PARAM = "model.instance_head"
MICRONS_PER_PIXEL_PARAM = "data.microns_per_pixel"  # the scale the model trained at
DATA_LAYOUT_PARAM = "dataset.layout"  # "monuseg" or "generic" (your own images), as fetch found it
OLD_MICRONS_PER_PIXEL_PARAM = "model.microns_per_pixel"  # its name in runs logged before it moved to `data`

# --- tags of a registered version ---
SCORE_TAG_PREFIX = "test_"
EVAL_PROTOCOL_TAG = "eval_params"  # the hash of the eval params that gave the scores
PROMOTION_TAG = "promotion"  # why `champion` moved, or did not
INSTANCE_HEAD_TAG = "instance_head"


def score_tag(score: str) -> str:
    """'aji' -> 'test_aji': a registered version's per-image mean test score."""
    return f"{SCORE_TAG_PREFIX}{score}"


# --- aliases of the registered model ---
CHAMPION = "champion"
CHALLENGER = "challenger"

# --- artifacts ---
MODEL_ARTIFACT = "model"
WEIGHTS_ARTIFACT = "weights"
"""The logged model's artifact that holds the file of `model.save_model`."""
NUCLEI_MODEL_ARTIFACT = "nuclei"
"""The model `register` logs beside the raw network and registers: images in, nuclei out."""
ONNX_ARTIFACT = "onnx"
"""The nuclei model's artifact that holds the network exported to ONNX."""
CHECKPOINTS_ARTIFACT = "checkpoints"
EVALUATION_ARTIFACT = "evaluation"
SAMPLES_ARTIFACT = f"{EVALUATION_ARTIFACT}/samples"
PER_IMAGE_ARTIFACT = f"{EVALUATION_ARTIFACT}/test_per_image.csv"
"""Artifacts are logged under their file's own name: keep this the name of layout.TEST_PER_IMAGE."""
