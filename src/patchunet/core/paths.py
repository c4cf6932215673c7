"""Where each stage reads and writes, relative to the project root (the folder of dvc.yaml).

dvc.yaml names the same paths; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_MANIFEST = Path("data/source.json")
RAW_DIR = Path("data/raw/monuseg")
DATASET_FILE = RAW_DIR / "dataset.json"  # what fetch fetched: layout, scale, the ids of each split
INTERIM_DIR = Path("data/interim")
MASKS_REPORT = INTERIM_DIR / "masks_report.json"
SPLIT_FILE = INTERIM_DIR / "split.json"
PATCH_DIR = Path("data/processed/patches")
PATCH_SUMMARY = Path("metrics/patches.json")

MODEL_FILE = Path("models/patchunet.pt")
RUN_FILE = Path("models/run.json")
CHECKPOINT_DIR = Path("models/checkpoints")
TRAIN_METRICS = Path("metrics/train.json")
TRAIN_PLOTS = Path("plots/train.csv")
TEST_METRICS = Path("metrics/test.json")
TEST_PER_IMAGE = Path("reports/test_per_image.csv")
SAMPLES_DIR = Path("reports/samples")
REGISTRY_FILE = Path("models/registry.json")
TUNE_DIR = Path("reports/tune")


def labels_dir(split: str) -> Path:
    """data/interim/<split>/labels: one <id>.tif instance map per image."""
    return INTERIM_DIR / split / "labels"
