"""`patchunet predict --model`: where the model comes from, and what it refuses to load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from conftest import make_stage_project, write_code_running_file


def predict_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`patchunet predict` in `project`, with no MLFLOW_TRACKING_URI: the default sqlite:///mlflow.db."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "patchunet", "predict", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def image_project(tmp_path: Path) -> Path:
    """A folder with params.yaml and one small RGB image, and no MLflow store."""
    project = make_stage_project(tmp_path / "project")
    (project / "mine.png").write_bytes(imagecodecs.png_encode(np.full((64, 64, 3), 200, np.uint8)))
    return project


def test_the_default_champion_without_a_store_is_one_line_and_creates_none(image_project: Path) -> None:
    result = predict_in(image_project, "mine.png", "--out", "out")
    assert result.returncode == 1
    database = image_project / "mlflow.db"
    assert result.stderr == (
        f"error: models:/patchunet@champion: no MLflow store at {database}: train first, or pass --model a model file\n"
    )
    assert not database.exists() and not (image_project / "out").exists()


def test_a_model_file_that_would_run_code_is_refused_without_running_it(image_project: Path) -> None:
    marker = image_project / "code-ran"
    write_code_running_file(image_project / "evil.pt", marker)
    result = predict_in(image_project, "mine.png", "--model", "evil.pt", "--out", "out")
    assert result.returncode == 1
    assert result.stderr.startswith("error: evil.pt: not a PatchUNet model file: it holds Python objects")
    assert result.stderr.count("\n") == 1
    assert not marker.exists()
