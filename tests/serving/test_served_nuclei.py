"""The registered model's `nuclei`: the same nucleus table as `patchunet predict` and `predict-slide` write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import make_train_project, run_cli, train_in, update_params
from skimage.draw import disk

from patchunet.core.config import EvalConfig, PatchConfig, ServeConfig, parse_section
from patchunet.inference.runtimes import runtime_network
from patchunet.io.slides import write_pyramidal_tiff
from patchunet.model.unet import load_model
from patchunet.postprocess.nuclei import NUCLEUS_COLUMNS


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny model trained on disc patches, whose eval settings keep what it finds after 2 epochs."""
    project = make_train_project(tmp_path_factory.mktemp("served") / "project")
    update_params(project, eval={"threshold": 0.3, "min_nucleus_area": 4})
    return train_in(project)


def disc_image(side: int = 256) -> np.ndarray:
    """Dark discs on a light, noisy ground, as the tiny model learnt them."""
    rng = np.random.default_rng(3)
    image = np.full((side, side, 3), 220, np.uint8)
    for _ in range(30):
        image[disk(rng.integers(8, side - 8, 2), rng.integers(4, 8), shape=(side, side))] = (70, 40, 120)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def served_nuclei(project: Path, image: np.ndarray) -> list[dict]:
    """The served model's `nuclei` for `image`, set up as `register` configures it."""
    from patchunet.serving.served_nuclei import ServedNuclei

    params = yaml.safe_load((project / "params.yaml").read_text())
    model = load_model(project / "models/patchunet.pt")
    served = ServedNuclei()
    served.cfg = parse_section(EvalConfig, params, "eval")
    served.window = served.cfg.window_for(parse_section(PatchConfig, params, "patch").size, model.cfg.size_multiple)
    served.serve = parse_section(ServeConfig, params, "serve")
    served.network = runtime_network(model, served.cfg)
    [answer] = served.predict(None, {"image": [image]})
    return answer["nuclei"]


def csv_columns(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def test_predict_predict_slide_and_the_served_model_give_the_same_nucleus_columns(trained, tmp_path: Path) -> None:
    project, uri = trained
    image = disc_image()
    tifffile.imwrite(tmp_path / "discs.tif", image, photometric="rgb")
    write_pyramidal_tiff(tmp_path / "slide.tif", image, 0.25)
    model = str(project / "models/patchunet.pt")
    for command, path in (("predict", "discs.tif"), ("predict-slide", "slide.tif")):
        result = run_cli(project, uri, command, str(tmp_path / path), "--model", model, "--out", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
    served = served_nuclei(project, image)
    assert len(served) > 0  # nuclei found, so the served rows have columns to compare
    assert csv_columns(tmp_path / "out" / "discs_nuclei.csv") == list(NUCLEUS_COLUMNS)
    assert csv_columns(tmp_path / "out" / "slide_nuclei.csv") == list(NUCLEUS_COLUMNS)
    assert all(list(row) == list(NUCLEUS_COLUMNS) for row in served)
    features = json.loads((tmp_path / "out" / "slide_nuclei.geojson").read_text())["features"]
    assert set(features[0]["properties"]["measurements"]) == set(NUCLEUS_COLUMNS) - {"nucleus"}
