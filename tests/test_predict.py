"""`patchunet predict` end to end: a tiny trained model on a real MoNuSeg test image."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import TEST_DIR, make_train_project, mlflow_client, train_in

REAL_IMAGE = "TCGA-2Z-A9J9-01A-01-TS1.tif"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return train_in(make_train_project(tmp_path_factory.mktemp("predict") / "project"))


def predict(project: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "patchunet", "predict", *args, "--params", str(project / "params.yaml")],
        cwd=project,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_predict_writes_labels_overlay_and_csvs_for_tiff_and_png(trained, real_monuseg: Path, tmp_path) -> None:
    project, uri = trained
    tiff = real_monuseg / TEST_DIR / REAL_IMAGE
    png = tmp_path / "as_png.png"
    png.write_bytes(imagecodecs.png_encode(tifffile.imread(tiff)))
    out = tmp_path / "out"
    result = predict(
        project, uri, str(tiff), str(png), "--model", str(project / "models/patchunet.pt"), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    for stem in (tiff.stem, "as_png"):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.shape == (1000, 1000) and labels.dtype in (np.uint16, np.uint32)
        assert imagecodecs.imread(out / f"{stem}_overlay.png").shape == (1000, 1000, 3)
        with (out / f"{stem}_nuclei.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == labels.max() == np.count_nonzero(np.unique(labels))
        assert sum(int(r["area_px"]) for r in rows) == int((labels > 0).sum())
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [Path(r["image"]).stem for r in summary] == [tiff.stem, "as_png"]
    assert summary[0]["nuclei"] == summary[1]["nuclei"]  # same pixels, same answer


def test_predict_takes_the_champion_from_the_registry(trained, real_monuseg: Path, tmp_path) -> None:
    project, uri = trained
    mlflow_client(uri).set_registered_model_alias("patchunet", "champion", "1")
    out = tmp_path / "out"
    result = predict(project, uri, str(real_monuseg / TEST_DIR / REAL_IMAGE), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / f"{Path(REAL_IMAGE).stem}_labels.tif").is_file()


def test_bad_inputs_get_one_line_each(trained, tmp_path) -> None:
    project, uri = trained
    model = str(project / "models/patchunet.pt")
    grey = tmp_path / "grey.png"
    grey.write_bytes(imagecodecs.png_encode(np.zeros((64, 64), np.uint8)))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    rgb = tmp_path / "rgb.png"
    rgb.write_bytes(imagecodecs.png_encode(np.zeros((64, 64, 3), np.uint8)))
    cases = {
        (str(grey), "--model", model): f"error: {grey}: grayscale image (64, 64); expected RGB (H, W, 3)",
        (str(broken), "--model", model): f"error: {broken}: corrupt or truncated image",
        (str(tmp_path / "absent.tif"), "--model", model): f"error: {tmp_path / 'absent.tif'}: file not found",
        (str(rgb), "--model", "models:/patchunet@nobody"): "error: models:/patchunet@nobody: no such model in",
        (str(rgb), "--model", str(tmp_path / "none.pt")): f"error: {tmp_path / 'none.pt'}: model file not found",
    }
    for args, message in cases.items():
        out = tmp_path / "out"
        result = predict(project, uri, *args, "--out", str(out))
        assert result.returncode == 1, args
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
        assert not out.exists()  # nothing written for a failed call
