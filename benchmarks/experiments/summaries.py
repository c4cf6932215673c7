"""The headline numbers of each experiment's table, as JSON under metrics/, for `dvc metrics show`.

Each stage of benchmarks/experiments/dvc.yaml runs it after the script that writes its table, so
that `dvc metrics show` lists these beside the pipeline's metrics, and `dvc metrics diff` compares
them between commits:

- ablation (reports/ablation.csv): per budget, the best row and the runner-up by mean val AJI over
  their seeds (a rerun's line replaces the earlier one of its row, seed and budget), with the best
  row's test AJI, which chooses nothing;
- seeds (reports/seeds.csv): the mean and standard deviation of test AJI, PQ and Dice across seeds;
- postprocess_on_val (reports/postprocess_on_val.csv): the best setting of the grid and its val scores.

    .venv/bin/python -m benchmarks.experiments.summaries ablation seeds
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from patchunet.core.files import write_json

SEED_SCORES = ("aji", "pq", "dice")
POSTPROCESS_SCORES = ("aji", "aji_plus", "pq", "dice", "f1")
DIGITS = 4


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SystemExit(f"{path}: no table; run the experiment that writes it first")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: the table has no rows")
    return rows


def mean_sd(values: list[float]) -> dict[str, float]:
    """{"mean": ..., "sd": ...} at DIGITS decimals; no sd for one value."""
    summary = {"mean": round(statistics.mean(values), DIGITS)}
    if len(values) > 1:
        summary["sd"] = round(statistics.stdev(values), DIGITS)
    return summary


def ablation(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Per budget ("minutes_5"), the best row and the runner-up by mean val AJI over their seeds."""
    latest = {(r["row"], r["seed"], float(r["budget_minutes"])): r for r in rows}
    groups: dict[float, dict[str, list[dict[str, str]]]] = {}
    for (row, _, budget), r in latest.items():
        groups.setdefault(budget, {}).setdefault(row, []).append(r)
    summary: dict[str, Any] = {"runs": len(latest)}
    for budget in sorted(groups):
        ranked = sorted(groups[budget].items(), key=lambda item: -statistics.mean(float(r["val_aji"]) for r in item[1]))
        (best, runs), *others = ranked
        entry = {
            "best": best,
            "seeds": len(runs),
            "val_aji": mean_sd([float(r["val_aji"]) for r in runs]),
            "test_aji": round(statistics.mean(float(r["test_aji"]) for r in runs), DIGITS),
            "rows": len(ranked),
        }
        if others:
            runner_up, its_runs = others[0]
            entry["runner_up"] = runner_up
            entry["runner_up_val_aji"] = round(statistics.mean(float(r["val_aji"]) for r in its_runs), DIGITS)
        summary[f"minutes_{budget:g}"] = entry
    return summary


def seeds(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The number of seeds, and each headline test score's mean and sd across them."""
    return {"seeds": len(rows), **{key: mean_sd([float(r[key]) for r in rows]) for key in SEED_SCORES}}


def postprocess_on_val(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The grid's size, and its best setting (the first row: best val AJI first) with its val scores."""
    best = rows[0]
    setting = {key: float(value) for key, value in best.items() if key not in POSTPROCESS_SCORES}
    scores = {key: round(float(best[key]), DIGITS) for key in POSTPROCESS_SCORES}
    return {"settings": len(rows), "best": setting, "val": scores}


EXPERIMENTS: dict[str, tuple[str, str, Callable[[list[dict[str, str]]], dict[str, Any]]]] = {
    "ablation": ("reports/ablation.csv", "metrics/ablation.json", ablation),
    "seeds": ("reports/seeds.csv", "metrics/seeds.json", seeds),
    "postprocess_on_val": ("reports/postprocess_on_val.csv", "metrics/postprocess_on_val.json", postprocess_on_val),
}
"""Experiment: (its table, its metrics file, the summary of the table)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", choices=list(EXPERIMENTS))
    args = parser.parse_args()
    for name in args.experiments:
        table, metrics, summarise = EXPERIMENTS[name]
        write_json(ROOT / metrics, summarise(read_rows(ROOT / table)))
        print(f"summaries: {table} -> {metrics}")


if __name__ == "__main__":
    main()
