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
from conftest import REPO_ROOT, TEST_DIR, make_train_project, mlflow_client, train_in

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


def random_model(folder: Path) -> Path:
    """A small PatchUNet with random weights: enough to run predict end to end in seconds."""
    import torch

    from patchunet.config import ModelConfig
    from patchunet.model import PatchUNet, save_model

    torch.manual_seed(0)
    path = folder / "random.pt"
    save_model(PatchUNet(ModelConfig(base_channels=4, depth=2, norm="batch", dropout=0.0)), path)
    return path


def small_png(path: Path, seed: int = 0) -> Path:
    path.write_bytes(imagecodecs.png_encode(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), np.uint8)))
    return path


def predict_here(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`patchunet predict` with the checkout's params.yaml and a store that does not exist."""
    return predict(REPO_ROOT, f"sqlite:///{tmp_path / 'mlflow.db'}", *args)


def summary_stems(out: Path) -> list[str]:
    with (out / "summary.csv").open() as f:
        return [Path(row["image"]).stem for row in csv.DictReader(f)]


def test_existing_outputs_are_refused_before_the_model_is_loaded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_nuclei.csv").write_text("mine\n")
    images = [str(small_png(tmp_path / "a.png")), str(small_png(tmp_path / "b.png"))]
    result = predict_here(tmp_path, *images, "--model", str(tmp_path / "absent.pt"), "--out", str(out))
    assert result.returncode == 1
    assert result.stderr == f"error: {out / 'b_nuclei.csv'}: already exists: pass --overwrite to replace it\n"
    assert (out / "b_nuclei.csv").read_text() == "mine\n" and sorted(p.name for p in out.iterdir()) == ["b_nuclei.csv"]


def test_a_second_run_keeps_the_summary_rows_of_the_first(tmp_path: Path) -> None:
    model, out = str(random_model(tmp_path)), tmp_path / "out"
    for name in ("a.png", "b.png"):
        result = predict_here(tmp_path, str(small_png(tmp_path / name)), "--model", model, "--out", str(out))
        assert result.returncode == 0, result.stderr
    assert summary_stems(out) == ["a", "b"]


def test_overwrite_replaces_the_outputs_and_summary_rows_of_repredicted_images_only(tmp_path: Path) -> None:
    model, out = str(random_model(tmp_path)), tmp_path / "out"
    first = [str(small_png(tmp_path / "a.png")), str(small_png(tmp_path / "b.png"))]
    assert predict_here(tmp_path, *first, "--model", model, "--out", str(out)).returncode == 0
    (out / "b_overlay.png").write_bytes(b"stale")
    again = [str(small_png(tmp_path / "b.png", seed=1)), str(small_png(tmp_path / "c.png"))]
    result = predict_here(tmp_path, *again, "--model", model, "--out", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert summary_stems(out) == ["a", "b", "c"]
    assert imagecodecs.imread(out / "b_overlay.png").shape == (64, 64, 3)


def test_an_out_that_cannot_be_written_is_one_line_before_the_model_is_loaded(tmp_path: Path) -> None:
    image = str(small_png(tmp_path / "a.png"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine\n")
    cases = {
        a_file: "exists and is not a folder",
        a_file / "out": "cannot write the outputs here",
        Path("/proc/patchunet-out"): "cannot write the outputs here",
    }
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0:
        cases[immutable] = "cannot write the outputs here"
    try:
        for out, problem in cases.items():
            result = predict_here(tmp_path, image, "--model", str(tmp_path / "absent.pt"), "--out", str(out))
            assert result.returncode == 1, out
            assert result.stderr.startswith(f"error: {out}: {problem}") and result.stderr.count("\n") == 1, (
                result.stderr
            )
    finally:
        subprocess.run(["chattr", "-i", str(immutable)], capture_output=True)
    assert a_file.read_text() == "mine\n" and not list(immutable.iterdir())
