"""benchmarks/: its layout, the how-to that lists it, and the experiments' headline metrics for DVC."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO_ROOT

from benchmarks.experiments import summaries

GROUPS = ("experiments", "perf", "checks", "tools")
EXPERIMENTS_DVC = REPO_ROOT / "benchmarks" / "experiments" / "dvc.yaml"


def ablation_row(row: str, seed: int, minutes: float, val_aji: float, test_aji: float = 0.5) -> dict[str, str]:
    return {
        "row": row,
        "seed": str(seed),
        "budget_minutes": str(minutes),
        "val_aji": str(val_aji),
        "test_aji": str(test_aji),
    }


def scripts() -> list[str]:
    """Every benchmark script, as the module name it runs by (benchmarks.perf.inference_speed)."""
    return [
        f"benchmarks.{group}.{path.stem}"
        for group in GROUPS
        for path in sorted((REPO_ROOT / "benchmarks" / group).glob("*.py"))
        if path.stem != "__init__"
    ]


def test_every_benchmark_lies_in_a_group_package() -> None:
    loose = sorted(p.name for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "harness"))
    assert loose == []
    assert all((REPO_ROOT / "benchmarks" / group / "__init__.py").is_file() for group in GROUPS)


@pytest.mark.parametrize("module", scripts())
def test_the_howto_lists_every_benchmark(module: str) -> None:
    howto = (REPO_ROOT / "docs" / "how-to" / "benchmarks.md").read_text()
    assert f"`{module}`" in howto or f"-m {module}" in howto


def test_ablation_summary_ranks_rows_by_mean_val_aji_over_their_latest_lines() -> None:
    rows = [
        ablation_row("wide", 0, 5, 0.60),
        ablation_row("wide", 0, 5, 0.40),  # a rerun: replaces the line above
        ablation_row("base", 0, 5, 0.50, test_aji=0.7),
        ablation_row("base", 1, 5, 0.54, test_aji=0.5),
        ablation_row("base", 0, 12, 0.58),
    ]
    summary = summaries.ablation(rows)
    assert summary["runs"] == 4
    five = summary["minutes_5"]
    assert (five["best"], five["seeds"], five["runner_up"]) == ("base", 2, "wide")
    assert five["val_aji"] == {"mean": 0.52, "sd": 0.0283}
    assert (five["test_aji"], five["runner_up_val_aji"]) == (0.6, 0.4)
    assert summary["minutes_12"]["val_aji"] == {"mean": 0.58}  # one seed: no sd


def test_seeds_summary_gives_mean_and_sd_of_each_headline_score() -> None:
    rows = [{"seed": str(seed), "aji": aji, "pq": "0.4", "dice": "0.8"} for seed, aji in ((0, "0.5"), (1, "0.7"))]
    summary = summaries.seeds(rows)
    assert summary["seeds"] == 2
    assert summary["aji"] == {"mean": 0.6, "sd": 0.1414}
    assert summary["pq"] == {"mean": 0.4, "sd": 0.0}


def test_postprocess_summary_is_the_first_row_the_best_setting() -> None:
    scores = {"dice": "0.8", "aji": "0.6", "aji_plus": "0.61", "pq": "0.55", "f1": "0.7"}
    rows = [{"threshold": "0.5", "watershed_h": "1.0", **scores}, {"threshold": "0.4", "watershed_h": "2.0", **scores}]
    summary = summaries.postprocess_on_val(rows)
    assert summary["settings"] == 2
    assert summary["best"] == {"threshold": 0.5, "watershed_h": 1.0}
    assert summary["val"]["aji"] == 0.6


def test_each_experiment_stage_keeps_in_git_the_table_and_metrics_its_summary_reads_and_writes() -> None:
    stages = yaml.safe_load(EXPERIMENTS_DVC.read_text())["stages"]
    assert set(stages) == set(summaries.EXPERIMENTS)
    for name, stage in stages.items():
        table, metrics, _ = summaries.EXPERIMENTS[name]
        assert stage["outs"] == [{table: {"cache": False}}], name
        assert stage["metrics"] == [{metrics: {"cache": False}}], name
        assert f"-m benchmarks.experiments.summaries {name}" in stage["cmd"][-1]


def test_the_default_chain_runs_no_benchmark() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert not [name for name, stage in stages.items() if "benchmarks" in str(stage["cmd"])]
