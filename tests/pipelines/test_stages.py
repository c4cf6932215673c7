"""The stage scripts in pipelines/ as DVC runs them: each once, in a subprocess of its own, on
synthetic data. What the stages do is tested in process, in tests/stages/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    make_tune_project,
    make_untrained_evaluation_project,
    mlflow_client,
    run_in_process,
    update_params,
)

from patchunet.tuning.study import open_storage
from patchunet.tuning.workers import WORKER_ATTR


def run_script(stage: str, project: Path, *args: str, source: Path | None = None, uri: str = ""):
    """pipelines/<stage>.py in `project`, with MONUSEG_DIR `source` (else none) and MLflow store `uri`."""
    env = {k: v for k, v in os.environ.items() if k != "MONUSEG_DIR"}
    env.update({"MONUSEG_DIR": str(source)} if source else {})
    env.update({"MLFLOW_TRACKING_URI": uri} if uri else {})
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / f"{stage}.py"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_ran(result: subprocess.CompletedProcess, last_line: str) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(last_line), result.stdout


@pytest.fixture
def small_project(stage_project: Path) -> Path:
    update_params(stage_project, patch={"size": 32, "stride": 24}, split={"val_fraction": 0.25})
    return stage_project


def test_source_script_lists_the_source(small_project: Path, synthetic_source: Path) -> None:
    assert_ran(run_script("source", small_project, source=synthetic_source), "source: wrote data/source.json")
    assert len(json.loads((small_project / "data/source.json").read_text())["files"]) == 12


def test_fetch_script_copies_the_source(small_project: Path, synthetic_source: Path) -> None:
    result = run_script("fetch", small_project, "--source", str(synthetic_source))
    assert_ran(result, "fetch: wrote data/raw/monuseg and data/raw/monuseg/dataset.json")


def test_masks_script_writes_the_label_maps(small_project: Path, synthetic_source: Path) -> None:
    run_in_process("fetch", small_project, source=str(synthetic_source))
    assert_ran(run_script("masks", small_project), "masks: wrote data/interim/{train,test}/labels")


def test_split_script_writes_the_split(small_project: Path, synthetic_source: Path) -> None:
    run_in_process("fetch", small_project, source=str(synthetic_source))
    assert_ran(run_script("split", small_project), "split: wrote data/interim/split.json")


def test_patches_script_writes_the_patch_sets(small_project: Path, synthetic_source: Path) -> None:
    for stage in ("fetch", "masks", "split"):
        run_in_process(stage, small_project, **({"source": str(synthetic_source)} if stage == "fetch" else {}))
    assert_ran(run_script("patches", small_project), "patches: wrote data/processed/patches/{train,val}")


def test_train_evaluate_and_register_scripts_run_in_turn(tmp_path: Path) -> None:
    project = make_untrained_evaluation_project(tmp_path / "project")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    trained = run_script("train", project, uri=uri)
    assert_ran(trained, "train: best epoch")
    assert "epoch   2/2" in trained.stdout
    assert_ran(run_script("evaluate", project, uri=uri), "evaluate: per-image mean dice")
    assert_ran(run_script("register", project, uri=uri), "register: patchunet v1 is challenger")
    assert {"models/patchunet.pt", "metrics/test.json", "models/registry.json"} <= {
        path.relative_to(project).as_posix() for path in project.rglob("*")
    }


def test_tune_script_shares_a_journal_file_between_two_worker_processes(tmp_path: Path) -> None:
    project = make_tune_project(tmp_path / "project", storage="journal:optuna.journal", n_trials=4)
    result = run_script("tune", project, "--workers", "2", uri=f"sqlite:///{project / 'mlflow.db'}")
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr + result.stdout
    study = optuna_study(project / "optuna.journal")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert len({t.user_attrs[WORKER_ATTR] for t in study.trials}) == 2  # the second process really ran trials
    client = mlflow_client(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("patchunet-tune").experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 4


def optuna_study(journal: Path):
    import optuna

    return optuna.load_study(study_name="patchunet-lr-patch", storage=open_storage(f"journal:{journal}"))
