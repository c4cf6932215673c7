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


def tiny_model_file(path: Path, *, poison: float | None = None, **config: object) -> Path:
    """A small PatchUNet saved as `save_model` does; `poison` is written into one weight, `config`
    overrides the model config the file holds."""
    import dataclasses

    import torch

    from patchunet.core.config import ModelConfig
    from patchunet.model.unet import PatchUNet

    model = PatchUNet(
        ModelConfig(base_channels=8, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    )
    state = model.state_dict()
    if poison is not None:
        state["decoders.0.0.weight"][0, 0, 0, 0] = poison
    torch.save({"model_config": {**dataclasses.asdict(model.cfg), **config}, "state_dict": state}, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_whose_weights_are_not_finite_is_refused_at_load(image_project: Path, value: float) -> None:
    tiny_model_file(image_project / "diverged.pt", poison=value)
    result = predict_in(image_project, "mine.png", "--model", "diverged.pt", "--out", "out")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: diverged.pt: its weights hold NaN or infinite values (first in decoders.0.0.weight)"
    )
    assert result.stderr.count("\n") == 1
    assert not (image_project / "out").exists()


def test_a_tiff_given_as_the_model_is_named_as_no_model_file(image_project: Path) -> None:
    import tifffile

    tifffile.imwrite(image_project / "slide.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    result = predict_in(image_project, "mine.png", "--model", "slide.tif", "--out", "out")
    assert result.returncode == 1
    assert result.stderr == (
        "error: slide.tif: not a PatchUNet model file: not a file torch.save writes (it is a TIFF image)\n"
    )


def test_a_bad_model_config_in_the_file_names_the_file_not_params_yaml(image_project: Path) -> None:
    tiny_model_file(image_project / "odd.pt", depth=99)
    result = predict_in(image_project, "mine.png", "--model", "odd.pt", "--out", "out")
    assert result.returncode == 1
    assert result.stderr.startswith("error: odd.pt: the model config this file holds is invalid: model.depth:")
    assert "params.yaml" not in result.stderr and result.stderr.count("\n") == 1
