"""`patchunet predict` end to end: a tiny trained model on a real MoNuSeg test image."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from conftest import REPO_ROOT, TEST_DIR, make_train_project, mlflow_client, run_cli, train_in

from patchunet import tracking

REAL_IMAGE = "TCGA-2Z-A9J9-01A-01-TS1.tif"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return train_in(make_train_project(tmp_path_factory.mktemp("predict") / "project"))


def predict(project: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli(project, uri, "predict", *args)


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
    record = json.loads((project / "models/run.json").read_text())
    tracking.connect(uri)
    tracking.register_run_model("patchunet", record["run_id"], record["model_uri"], {})  # as `register` does
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
        (str(rgb), "--model", "models:/patchunet@nobody"): "error: models:/patchunet@nobody in MLflow at",
        (str(rgb), "--model", str(tmp_path / "none.pt")): f"error: {tmp_path / 'none.pt'}: model file not found",
    }
    for args, message in cases.items():
        out = tmp_path / "out"
        result = predict(project, uri, *args, "--out", str(out))
        assert result.returncode == 1, args
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
        assert not out.exists()  # nothing written for a failed call


def random_model(folder: Path, seed: int = 0) -> Path:
    """A small PatchUNet with random weights: enough to run predict end to end in seconds."""
    import torch

    from patchunet.core.config import ModelConfig, load_params
    from patchunet.model.unet import PatchUNet, save_model

    torch.manual_seed(seed)
    path = folder / f"random-{seed}.pt"
    model = PatchUNet(
        ModelConfig(base_channels=4, depth=2, norm="batch", dropout=0.0, instance_head="none", microns_per_pixel=0.25)
    )
    # centred on the checkout's eval.threshold, so its nuclei are the same whatever value val chose
    threshold = load_params(REPO_ROOT / "params.yaml")["eval"]["threshold"]
    with torch.no_grad():
        model.head.bias += math.log(threshold / (1 - threshold))
    save_model(model, path)
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


def half_size_tiff(source: Path, path: Path) -> Path:
    """A synthetic 20x image: each 2x2 block of a 40x image averaged into one pixel."""
    image = tifffile.imread(source).astype(np.float32)
    height, width = image.shape[0] // 2, image.shape[1] // 2
    half = image[: height * 2, : width * 2].reshape(height, 2, width, 2, 3).mean(axis=(1, 3))
    tifffile.imwrite(path, np.round(half).astype(np.uint8), photometric="rgb")
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_20x_image_given_as_20x_gets_labels_of_its_own_shape_and_areas_at_its_scale(
    real_monuseg: Path, tmp_path: Path
) -> None:
    image = half_size_tiff(real_monuseg / TEST_DIR / REAL_IMAGE, tmp_path / "at20x.tif")
    out = tmp_path / "out"
    model = str(random_model(tmp_path))
    result = predict_here(tmp_path, str(image), "--model", model, "--out", str(out), "--magnification", "20x")
    assert result.returncode == 0, result.stderr
    assert "assuming" not in result.stderr
    labels = tifffile.imread(out / "at20x_labels.tif")
    assert labels.shape == (500, 500) and labels.max() > 0
    assert imagecodecs.imread(out / "at20x_overlay.png").shape == (500, 500, 3)
    nuclei = read_csv(out / "at20x_nuclei.csv")
    assert sum(int(r["area_px"]) for r in nuclei) == int((labels > 0).sum())  # areas in the image's own pixels
    assert all(float(r["area_um2"]) == pytest.approx(int(r["area_px"]) * 0.25) for r in nuclei)
    (row,) = read_csv(out / "summary.csv")
    assert (float(row["microns_per_pixel"]), row["scale_from"]) == (0.5, "--magnification 20x")


def test_an_mpp_equal_to_the_model_scale_changes_nothing_and_no_option_says_what_it_assumes(
    real_monuseg: Path, tmp_path: Path
) -> None:
    image, model = str(real_monuseg / TEST_DIR / REAL_IMAGE), str(random_model(tmp_path))
    assumed = predict_here(tmp_path, image, "--model", model, "--out", str(tmp_path / "assumed"))
    given = predict_here(tmp_path, image, "--model", model, "--out", str(tmp_path / "given"), "--mpp", "0.25")
    assert assumed.returncode == 0 and given.returncode == 0, assumed.stderr + given.stderr
    assert "assuming 0.25 µm/px, the model's scale; pass --mpp or --magnification if not\n" in assumed.stderr
    assert "assuming" not in given.stderr
    stem = Path(REAL_IMAGE).stem
    labels = tifffile.imread(tmp_path / "assumed" / f"{stem}_labels.tif")
    assert labels.max() > 0  # not two empty maps
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "given" / f"{stem}_labels.tif"), labels)
    for name in (f"{stem}_nuclei.csv", f"{stem}_overlay.png"):
        assert (tmp_path / "given" / name).read_bytes() == (tmp_path / "assumed" / name).read_bytes(), name


def test_bad_scale_options_get_one_line_each(tmp_path: Path) -> None:
    model, image = str(random_model(tmp_path)), str(small_png(tmp_path / "a.png"))
    cases = {
        ("--mpp", "0"): "error: --mpp 0: must be a positive number of µm per pixel",
        ("--mpp", "nan"): "error: --mpp nan: must be a positive number of µm per pixel",
        ("--mpp", "abc"): "error: --mpp abc: must be a positive number of µm per pixel",
        ("--magnification", "30x"): "error: --magnification 30x: unknown magnification; use one of 10x, 20x, 40x",
        ("--mpp", "0.5", "--magnification", "20x"): "error: --mpp and --magnification both give the scale",
        ("--mpp", "4"): f"error: {image}: --mpp 4: 4 µm/px is 16x from the model's 0.25 µm/px",
    }
    for args, message in cases.items():
        out = tmp_path / "out"
        result = predict_here(tmp_path, image, "--model", model, "--out", str(out), *args)
        assert result.returncode == 1, args
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
        assert not out.exists()


def test_a_scale_the_tiff_records_is_used_and_said(tmp_path: Path) -> None:
    image = tmp_path / "recorded.tif"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    tifffile.imwrite(image, pixels, photometric="rgb", resolution=(20_000, 20_000), resolutionunit="CENTIMETER")
    out = tmp_path / "out"
    result = predict_here(tmp_path, str(image), "--model", str(random_model(tmp_path)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"{image}: the file records 0.5 µm/px (20x); resampled to the model's 0.25 µm/px\n" in result.stderr
    assert "assuming" not in result.stderr
    assert tifffile.imread(out / "recorded_labels.tif").shape == (48, 64)
    (row,) = read_csv(out / "summary.csv")
    assert (float(row["microns_per_pixel"]), row["scale_from"]) == (0.5, "file")


def test_a_summary_written_before_scales_were_recorded_keeps_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text(
        "image,nuclei,mean_area_px,median_area_px,foreground_fraction\nold.png,3,100.0,90.0,0.1\n"
    )
    image = str(small_png(tmp_path / "a.png"))
    result = predict_here(tmp_path, image, "--model", str(random_model(tmp_path)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "summary.csv")
    assert [(r["image"], r["microns_per_pixel"]) for r in rows] == [("old.png", ""), (image, "0.25")]


def output_bytes(out: Path, stem: str) -> dict[str, bytes]:
    return {suffix: (out / f"{stem}{suffix}").read_bytes() for suffix in ("_labels.tif", "_overlay.png", "_nuclei.csv")}


def test_a_rerun_skips_the_images_already_done_and_keeps_their_files(tmp_path: Path) -> None:
    model, out = str(random_model(tmp_path)), tmp_path / "out"
    first = [str(small_png(tmp_path / "a.png")), str(small_png(tmp_path / "b.png"))]
    assert predict_here(tmp_path, *first, "--model", model, "--out", str(out)).returncode == 0
    done = {stem: output_bytes(out, stem) for stem in ("a", "b")}
    result = predict_here(tmp_path, *first, str(small_png(tmp_path / "c.png")), "--model", model, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"2 of 3 images already done in {out}: skipped (--overwrite redoes them)\n" in result.stderr
    assert {stem: output_bytes(out, stem) for stem in ("a", "b")} == done
    assert summary_stems(out) == ["a", "b", "c"]


HANG_BEFORE_RENAMING = """
import os, sys, time
from pathlib import Path

rename = os.replace

def hang_before(source, target, *args, **kwargs):
    if str(target).endswith(sys.argv[1]):
        Path(sys.argv[2]).touch()
        time.sleep(600)
    return rename(source, target, *args, **kwargs)

os.replace = hang_before
from patchunet.cli import main
main(sys.argv[3:])
"""
"""`patchunet predict` that stops for good just before it renames a file ending in argv[1] into place,
after touching the marker argv[2]: a kill there finds the run mid-write, its temporaries on disk."""


def kill_before_renaming(tmp_path: Path, name_end: str, images: list[str], model: str, out: Path) -> None:
    """Run `patchunet predict` on `images` and SIGKILL it just before it renames a file ending in
    `name_end` into place (see HANG_BEFORE_RENAMING)."""
    marker = tmp_path / f"writing-{name_end}"
    options = ("--model", model, "--out", str(out), "--params", str(REPO_ROOT / "params.yaml"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    command = [sys.executable, "-c", HANG_BEFORE_RENAMING, name_end, str(marker), "predict", *images, *options]
    killed = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), killed.communicate()[1]
    killed.send_signal(signal.SIGKILL)
    killed.communicate()


def test_a_predict_killed_mid_run_keeps_the_finished_rows_and_a_rerun_resumes(tmp_path: Path) -> None:
    model, out = str(random_model(tmp_path)), tmp_path / "out"
    images = [str(small_png(tmp_path / f"{stem}.png", seed)) for seed, stem in enumerate("abc")]
    kill_before_renaming(tmp_path, "b_nuclei.csv", images, model, out)
    assert summary_stems(out) == ["a"]  # the finished image's row survives the kill
    assert not any((out / f"b{suffix}").exists() for suffix in ("_labels.tif", "_overlay.png", "_nuclei.csv"))
    assert sorted(p.name.split(".")[1] for p in out.glob(".*.tmp")) == ["b_labels", "b_nuclei", "b_overlay"]
    finished = output_bytes(out, "a")

    only_a = predict_here(tmp_path, images[0], "--model", model, "--out", str(out))
    assert only_a.returncode == 0, only_a.stderr
    assert f"1 of 1 images already done in {out}: skipped" in only_a.stderr
    assert not list(out.glob(".*.tmp"))  # the dead writer's temporaries, though b is not written again

    resumed = predict_here(tmp_path, *images, "--model", model, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"1 of 3 images already done in {out}: skipped" in resumed.stderr
    assert summary_stems(out) == ["a", "b", "c"]
    assert output_bytes(out, "a") == finished
    assert imagecodecs.imread(out / "c_overlay.png").shape == (64, 64, 3)


def test_a_predict_killed_between_its_files_and_its_row_redoes_that_image(tmp_path: Path) -> None:
    model, out = str(random_model(tmp_path)), tmp_path / "out"
    images = [str(small_png(tmp_path / f"{stem}.png", seed)) for seed, stem in enumerate("ab")]
    kill_before_renaming(tmp_path, "summary.csv", images, model, out)
    assert output_bytes(out, "a") and not (out / "summary.csv").exists()  # a's files, and no row for them

    resumed = predict_here(tmp_path, *images, "--model", model, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{images[0]}: a killed run left its outputs in {out} unfinished: redoing it\n" in resumed.stderr
    assert summary_stems(out) == ["a", "b"]
    assert not (out / ".predict-pending.json").exists()


def test_a_rerun_with_another_model_refuses_the_outputs_of_the_first(tmp_path: Path) -> None:
    image, out = str(small_png(tmp_path / "a.png")), tmp_path / "out"
    first, other = str(random_model(tmp_path)), str(random_model(tmp_path, seed=1))
    assert predict_here(tmp_path, image, "--model", first, "--out", str(out)).returncode == 0
    done = output_bytes(out, "a")
    result = predict_here(tmp_path, image, "--model", other, "--out", str(out))
    assert result.returncode == 1
    labels = out / "a_labels.tif"
    assert result.stderr == f"error: {labels}: already exists, made by another model: pass --overwrite to replace it\n"
    assert output_bytes(out, "a") == done


def test_a_rerun_with_other_eval_settings_does_not_skip(tmp_path: Path) -> None:
    import yaml

    image, model = str(small_png(tmp_path / "a.png")), str(random_model(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["eval"]["min_nucleus_area"] += 1
    (other / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    assert predict_here(tmp_path, image, "--model", model, "--out", str(out)).returncode == 0
    result = predict(other, f"sqlite:///{tmp_path / 'mlflow.db'}", image, "--model", model, "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {out / 'a_labels.tif'}: already exists, made with other settings")


def test_another_input_file_with_the_same_stem_does_not_skip(tmp_path: Path) -> None:
    model, png = str(random_model(tmp_path)), small_png(tmp_path / "a.png")
    tiff = tmp_path / "a.tif"
    tifffile.imwrite(tiff, imagecodecs.imread(png), photometric="rgb")
    out = str(tmp_path / "out")
    assert predict_here(tmp_path, str(png), "--model", model, "--out", out).returncode == 0
    result = predict_here(tmp_path, str(tiff), "--model", model, "--out", out)
    assert result.returncode == 1
    assert "already exists, made from another input file: pass --overwrite" in result.stderr


def test_a_changed_input_file_does_not_skip(tmp_path: Path) -> None:
    model, image = str(random_model(tmp_path)), tmp_path / "a.png"
    out = str(tmp_path / "out")
    assert predict_here(tmp_path, str(small_png(image)), "--model", model, "--out", out).returncode == 0
    result = predict_here(tmp_path, str(small_png(image, seed=1)), "--model", model, "--out", out)
    assert result.returncode == 1
    assert "already exists, made from another content of its input file: pass --overwrite" in result.stderr
