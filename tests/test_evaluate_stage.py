"""The `evaluate` and `register` stages end to end, against a real SQLite MLflow store.

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
    run_pipeline,
)

from patchunet import tracking
from patchunet.io import read_label_image

SCORES = ("dice", "iou", "aji", "aji_plus", "pq", "dq", "sq", "f1")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A trained project after one run of evaluate; returns (project, uri, evaluate's stdout)."""
    project, uri = make_evaluation_project(tmp_path_factory.mktemp("evaluated") / "project")
    result = run_pipeline(project, "evaluate", uri)
    assert result.returncode == 0, result.stderr
    return project, uri, result.stdout


def test_evaluate_writes_both_aggregates_named_for_what_they_are(evaluated) -> None:
    project, _, stdout = evaluated
    metrics = json.loads((project / "metrics/test.json").read_text())
    assert metrics["images"] == len(TEST_IDS) and metrics["window"] == 32 and metrics["tta"] is False
    for aggregate in ("per_image_mean", "dataset"):
        assert set(SCORES) <= set(metrics[aggregate])
        assert all(0.0 <= metrics[aggregate][name] <= 1.0 for name in SCORES)
    assert "per-image mean dice" in stdout


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

    from patchunet.model import load_model

    project, _, _ = evaluated
    head = load_model(project / "models/patchunet.pt").cfg.instance_head
    head_maps = sorted((project / "reports/samples").glob("*_head.png"))
    if head == "none":
        assert head_maps == []
    else:
        assert [p.name for p in head_maps] == [f"{image_id}_head.png" for image_id in TEST_IDS[:2]]
        width = 208 if head == "hover" else 100
        assert imagecodecs.imread(head_maps[0]).shape == (100, width, 3)


def test_test_metrics_go_to_the_training_run_and_the_version_tags(evaluated) -> None:
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
    tags = client.get_model_version("patchunet", record["version"]).tags
    assert float(tags["test_aji"]) == pytest.approx(metrics["per_image_mean"]["aji"], abs=1e-4)


def test_evaluate_without_a_trained_model_says_so_in_one_line(stage_project: Path) -> None:
    result = run_pipeline(stage_project, "evaluate", f"sqlite:///{stage_project / 'mlflow.db'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "error: models/run.json: file not found: run the stage that writes it first (dvc repro)"
    )


def set_candidate(project: Path, version: int, aji: float) -> None:
    """Point models/run.json at `version` and give metrics/test.json that per-image AJI."""
    record = json.loads((project / "models/run.json").read_text())
    (project / "models/run.json").write_text(json.dumps({**record, "version": version}))
    (project / "metrics/test.json").write_text(json.dumps({"per_image_mean": {"aji": aji}}))


def test_register_moves_champion_only_on_a_better_aji(tmp_path: Path) -> None:
    project, uri = make_evaluation_project(tmp_path / "project")
    client = mlflow_client(uri)
    record = json.loads((project / "models/run.json").read_text())
    tracking.connect(uri)
    for _ in range(3):  # versions 2, 3, 4 of the same logged model
        tracking.register_model(record["model_uri"], "patchunet", tags={})

    def register(version: int, aji: float) -> dict:
        set_candidate(project, version, aji)
        if version > 1:  # what evaluate would have tagged
            client.set_model_version_tag("patchunet", str(version), "test_aji", str(aji))
        result = run_pipeline(project, "register", uri)
        assert result.returncode == 0, result.stderr
        return json.loads((project / "models/registry.json").read_text())

    def holder(alias: str) -> int:
        return int(client.get_model_version_by_alias("patchunet", alias).version)

    first = register(1, 0.50)  # version 1 has no test_aji tag yet: evaluate did not run here
    assert first["promoted"] and holder("champion") == 1 and holder("challenger") == 1
    client.set_model_version_tag("patchunet", "1", "test_aji", "0.5")

    worse = register(2, 0.45)
    assert not worse["promoted"] and holder("champion") == 1 and holder("challenger") == 2
    assert "does not beat champion v1's 0.5000" in client.get_model_version("patchunet", "2").tags["promotion"]

    equal = register(3, 0.50)
    assert not equal["promoted"] and holder("champion") == 1 and holder("challenger") == 3

    better = register(4, 0.55)
    assert better["promoted"] and holder("champion") == 4 and holder("challenger") == 4
    assert "beats champion v1's 0.5000" in client.get_model_version("patchunet", "4").tags["promotion"]


def test_register_refuses_a_version_the_store_does_not_hold(evaluated, tmp_path: Path) -> None:
    project, uri, _ = evaluated
    record = json.loads((project / "models/run.json").read_text())
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    (other / "metrics").mkdir()
    (other / "params.yaml").write_text((project / "params.yaml").read_text())
    (other / "models/run.json").write_text(json.dumps({**record, "version": 99}))
    (other / "metrics/test.json").write_text(json.dumps({"per_image_mean": {"aji": 0.9}}))
    result = run_pipeline(other, "register", uri)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model patchunet version 99 not found" in result.stderr
