"""The `evaluate` and `register` stages in process, end to end, against a real SQLite MLflow store.

A tiny model is trained by the real train stage on synthetic discs; the test set is two synthetic
tiles written in the project's raw layout, with XML annotations and label maps.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TEST_IDS,
    make_evaluation_project,
    mlflow_client,
    run_cli,
    run_in_process,
)

from patchunet import tracking
from patchunet.core.errors import PatchUNetError
from patchunet.io.images import read_label_image
from patchunet.stages.evaluate import EvaluateSummary

SCORES = ("dice", "iou", "aji", "aji_plus", "pq", "dq", "sq", "f1")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, EvaluateSummary]:
    """A trained project after one run of evaluate; returns (project, uri, evaluate's summary)."""
    project, uri = make_evaluation_project(tmp_path_factory.mktemp("evaluated") / "project")
    return project, uri, run_in_process("evaluate", project, uri)


def test_evaluate_writes_both_aggregates_named_for_what_they_are(evaluated) -> None:
    project, _, summary = evaluated
    metrics = json.loads((project / "metrics/test.json").read_text())
    assert metrics["images"] == len(TEST_IDS) and metrics["window"] == 32 and metrics["tta"] is False
    for aggregate in ("per_image_mean", "dataset"):
        assert set(SCORES) <= set(metrics[aggregate])
        assert all(0.0 <= metrics[aggregate][name] <= 1.0 for name in SCORES)
    assert summary.metrics == metrics and [row["image_id"] for row in summary.rows] == TEST_IDS


def test_per_image_csv_has_one_row_per_test_image_and_means_match(evaluated) -> None:
    project, _, _ = evaluated
    with (project / "reports/test_per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["image_id"] for row in rows] == TEST_IDS
    assert all(int(row["true_nuclei"]) == 6 for row in rows)
    metrics = json.loads((project / "metrics/test.json").read_text())
    mean_aji = np.mean([float(row["aji"]) for row in rows])
    assert metrics["per_image_mean"]["aji"] == pytest.approx(mean_aji, abs=1e-4)


def test_samples_show_truth_and_prediction_side_by_side(evaluated) -> None:
    import imagecodecs

    project, _, _ = evaluated
    samples = sorted((project / "reports/samples").glob("*[0-9A-Z].png"))
    assert [p.stem for p in samples] == TEST_IDS[:2]
    assert imagecodecs.imread(samples[0]).shape == (100, 208, 3)
    predicted = read_label_image(project / f"reports/samples/{TEST_IDS[0]}_labels.tif")
    assert predicted.shape == (100, 100) and predicted.max() > 0


def test_samples_show_the_instance_heads_map_of_a_model_with_one(evaluated) -> None:
    import imagecodecs

    from patchunet.model.unet import load_model

    project, _, _ = evaluated
    head = load_model(project / "models/patchunet.pt").cfg.instance_head
    head_maps = sorted((project / "reports/samples").glob("*_head.png"))
    if head == "none":
        assert head_maps == []
    else:
        assert [p.name for p in head_maps] == [f"{image_id}_head.png" for image_id in TEST_IDS[:2]]
        width = 208 if head == "hover" else 100
        assert imagecodecs.imread(head_maps[0]).shape == (100, width, 3)


def test_test_metrics_go_to_the_training_run(evaluated) -> None:
    project, uri, _ = evaluated
    record = json.loads((project / "models/run.json").read_text())
    client = mlflow_client(uri)
    run = client.get_run(record["run_id"])
    metrics = json.loads((project / "metrics/test.json").read_text())
    for name in SCORES:
        assert run.data.metrics[f"test/{name}"] == pytest.approx(metrics["per_image_mean"][name])
        assert run.data.metrics[f"test/dataset/{name}"] == pytest.approx(metrics["dataset"][name])
    artifacts = {a.path for a in client.list_artifacts(record["run_id"], "evaluation")}
    assert {"evaluation/test.json", "evaluation/test_per_image.csv", "evaluation/samples"} <= artifacts


def test_test_metrics_name_the_eval_protocol_that_gave_them(evaluated) -> None:
    from patchunet.core.config import EvalConfig, load_params, parse_section
    from patchunet.evaluation.protocol import protocol_hash

    project, _, _ = evaluated
    metrics = json.loads((project / "metrics/test.json").read_text())
    cfg = parse_section(EvalConfig, load_params(project / "params.yaml"), "eval")
    assert metrics["eval_protocol"] == protocol_hash(cfg, metrics["window"])


@pytest.fixture(scope="module")
def registered(evaluated) -> tuple[Path, str, list]:
    """The evaluated project after `register`; returns (project, uri, the versions before register)."""
    project, uri, _ = evaluated
    tracking.connect(uri)
    before = tracking.list_versions("patchunet")
    run_in_process("register", project, uri)
    return project, uri, before


def test_only_register_makes_a_version_and_only_of_an_evaluated_model(registered) -> None:
    project, uri, before = registered
    assert before == []  # neither training nor evaluation registered anything
    tracking.connect(uri)
    record = json.loads((project / "models/run.json").read_text())
    (version,) = tracking.list_versions("patchunet")
    assert version.run_id == record["run_id"] and version.aliases == ("challenger", "champion")
    assert json.loads((project / "models/registry.json").read_text())["version"] == version.version == 1


def test_the_registered_version_carries_its_test_scores_and_eval_protocol(registered) -> None:
    project, uri, _ = registered
    metrics = json.loads((project / "metrics/test.json").read_text())
    tags = mlflow_client(uri).get_model_version("patchunet", "1").tags
    assert float(tags["test_aji"]) == pytest.approx(metrics["per_image_mean"]["aji"], abs=1e-4)
    assert tags["eval_params"] == metrics["eval_protocol"]
    assert float(tags["test_seconds_per_image"]) == metrics["seconds_per_image"]


def test_registered_version_loads_back_and_predicts_like_the_saved_model(registered) -> None:
    import torch

    from patchunet.model.unet import load_model

    project, uri, _ = registered
    run = json.loads((project / "models/run.json").read_text())
    version = mlflow_client(uri).get_model_version("patchunet", "1")
    assert version.run_id == run["run_id"]
    assert {"lr", "patch_size", "base_channels", "depth", "val_dice", "val_iou"} <= set(version.tags)

    tracking.connect(uri)
    registered_model = tracking.load_logged_model("models:/patchunet/1")
    local = load_model(project / "models/patchunet.pt")
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(registered_model(x), local(x))


def test_evaluate_without_a_trained_model_says_so_in_one_line(stage_project: Path) -> None:
    with pytest.raises(PatchUNetError) as refused:
        run_in_process("evaluate", stage_project, f"sqlite:///{stage_project / 'mlflow.db'}")
    run_file = stage_project / "models/run.json"
    assert str(refused.value) == f"{run_file}: file not found: run the stage that writes it first (dvc repro)"


def new_candidate(project: Path, aji: float) -> None:
    """A new training run whose logged model is the trained one, in models/run.json, with that
    per-image test AJI in metrics/test.json: what train and evaluate would leave."""
    from patchunet.model.unet import load_model

    record = json.loads((project / "models/run.json").read_text())
    with tracking.run("patchunet") as active:
        model_uri = tracking.log_model(load_model(project / "models/patchunet.pt"), np.zeros((1, 3, 8, 8), np.float32))
    (project / "models/run.json").write_text(json.dumps({**record, "run_id": active.run_id, "model_uri": model_uri}))
    set_test_aji(project, aji)


def set_test_aji(project: Path, aji: float) -> None:
    metrics = json.loads((project / "metrics/test.json").read_text())
    metrics["per_image_mean"]["aji"] = aji
    (project / "metrics/test.json").write_text(json.dumps(metrics))


def test_register_moves_champion_only_on_a_better_aji(tmp_path: Path) -> None:
    project, uri = make_evaluation_project(tmp_path / "project")
    run_in_process("evaluate", project, uri)
    client = mlflow_client(uri)
    tracking.connect(uri)

    def register() -> dict:
        record = run_in_process("register", project, uri)
        assert json.loads((project / "models/registry.json").read_text()) == record
        return record

    def holder(alias: str) -> int:
        return int(client.get_model_version_by_alias("patchunet", alias).version)

    set_test_aji(project, 0.50)
    first = register()
    assert first["promoted"] and holder("champion") == 1 and holder("challenger") == 1

    new_candidate(project, 0.45)
    worse = register()
    assert not worse["promoted"] and holder("champion") == 1 and holder("challenger") == 2
    assert "does not beat champion v1's 0.5000" in client.get_model_version("patchunet", "2").tags["promotion"]

    new_candidate(project, 0.50)
    equal = register()
    assert not equal["promoted"] and holder("champion") == 1 and holder("challenger") == 3

    new_candidate(project, 0.55)
    better = register()
    assert better["promoted"] and holder("champion") == 4 and holder("challenger") == 4
    assert "beats champion v1's 0.5000" in client.get_model_version("patchunet", "4").tags["promotion"]

    again = register()  # dvc repro register once more, say after a failure: no second version of the run
    assert again["version"] == 4 and [v.version for v in tracking.list_versions("patchunet")] == [4, 3, 2, 1]


def test_register_reuses_the_version_a_store_of_the_old_order_made_at_training(tmp_path: Path) -> None:
    """Before register came after evaluate, training registered the version; register tags that one."""
    project, uri = make_evaluation_project(tmp_path / "project")
    run_in_process("evaluate", project, uri)
    record = json.loads((project / "models/run.json").read_text())
    tracking.connect(uri)
    made_at_training = tracking.register_model(record["model_uri"], "patchunet", {"lr": 0.01})
    run_in_process("register", project, uri)
    (version,) = tracking.list_versions("patchunet")
    assert version.version == made_at_training.version and "aji" in version.scores
    assert version.aliases == ("challenger", "champion")


def test_register_refuses_a_run_the_store_does_not_hold(evaluated, tmp_path: Path) -> None:
    project, uri, _ = evaluated
    record = json.loads((project / "models/run.json").read_text())
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "metrics").mkdir()
    (other / "params.yaml").write_text((project / "params.yaml").read_text())
    (other / "models/run.json").write_text(json.dumps({**record, "run_id": "0" * 32}))
    (other / "metrics/test.json").write_text((project / "metrics/test.json").read_text())
    with pytest.raises(PatchUNetError, match=f"run {'0' * 32} in MLflow at .*not found"):
        run_in_process("register", other, uri)


def test_register_of_metrics_from_before_the_eval_protocol_says_to_evaluate_again(evaluated, tmp_path: Path) -> None:
    project, uri, _ = evaluated
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "metrics").mkdir()
    (other / "params.yaml").write_text((project / "params.yaml").read_text())
    (other / "models/run.json").write_text((project / "models/run.json").read_text())
    (other / "metrics/test.json").write_text(json.dumps({"per_image_mean": {"aji": 0.5}, "seconds_per_image": 1.0}))
    with pytest.raises(PatchUNetError, match=r"metrics/test.json: has no 'eval_protocol'"):
        run_in_process("register", other, uri)


def test_the_registered_version_returns_the_nuclei_that_predict_writes(registered, tmp_path: Path) -> None:
    """mlflow.pyfunc.load_model(...).predict on an array and on PNG bytes gives `patchunet predict`'s labels."""
    import base64

    import imagecodecs
    import mlflow.pyfunc
    import pandas as pd
    import tifffile

    from patchunet.serving.requests import decoded_labels

    project, uri, _ = registered
    image_path = project / f"data/raw/monuseg/test/images/{TEST_IDS[0]}.tif"
    out = tmp_path / "out"
    result = run_cli(project, uri, "predict", str(image_path), "--model", "models:/patchunet/1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    expected = tifffile.imread(out / f"{TEST_IDS[0]}_labels.tif")
    with (out / f"{TEST_IDS[0]}_nuclei.csv").open() as f:
        expected_rows = list(csv.DictReader(f))
    assert expected.max() > 0  # the tiny model finds the synthetic nuclei, so the comparison means something

    tracking.connect(uri)
    model = mlflow.pyfunc.load_model("models:/patchunet/1")
    image = tifffile.imread(image_path)
    png = base64.b64encode(imagecodecs.png_encode(image)).decode()
    as_array, as_png = model.predict(pd.DataFrame({"image": [image, png]}))
    np.testing.assert_array_equal(as_array["labels"], expected)
    np.testing.assert_array_equal(decoded_labels(as_png["labels"]), expected)
    assert [str(row["nucleus"]) for row in as_array["nuclei"]] == [row["nucleus"] for row in expected_rows]
    first, expected_first = as_array["nuclei"][0], expected_rows[0]
    assert {key: str(value) for key, value in first.items()} == expected_first
    assert 0.5 <= first["mean_probability"] <= 1 and as_array["microns_per_pixel"] == 0.25


def test_the_registered_version_refuses_a_bad_image_in_one_line(registered) -> None:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    _, uri, _ = registered
    tracking.connect(uri)
    model = mlflow.pyfunc.load_model("models:/patchunet/1")
    with pytest.raises(MlflowException, match=r"^image 1: corrupt or truncated image, or not an image") as raised:
        model.predict(pd.DataFrame({"image": [np.zeros((40, 40, 3), np.uint8), b"no image"]}))
    assert "\n" not in raised.value.message
    # the scale is the request's param, refused before any image is read
    with pytest.raises(MlflowException, match=r"^params mpp: 40 µm/px is 160x from the model's 0.25 µm/px"):
        model.predict(pd.DataFrame({"image": [np.zeros((40, 40, 3), np.uint8)]}), params={"mpp": 40.0})


def test_the_registered_model_and_version_carry_model_cards(registered) -> None:
    project, uri, _ = registered
    client = mlflow_client(uri)
    metrics = json.loads((project / "metrics/test.json").read_text())["per_image_mean"]
    card = client.get_model_version("patchunet", "1").description
    assert card.startswith("# patchunet v1\n")
    assert f"AJI {metrics['aji']:.4f}" in card and "MoNuSeg 2018" in card and "0.25 µm per pixel" in card
    assert 'mlflow.pyfunc.load_model("models:/patchunet/1")' in card and "model.predict(" in card
    assert "models:/patchunet@champion" in client.get_registered_model("patchunet").description
