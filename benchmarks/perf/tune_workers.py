"""Optuna trials per hour with 1 and with 2 tune workers sharing a study on PostgreSQL (the team
stack's), side by side in one run, on this checkout's real patches.

Each run is a fresh study of `--trials` trials of one epoch at a fixed patch size, searching the
learning rate only, so that every trial does the same work; `patchunet tune --workers N` runs it,
each worker pinned to its share of the CPUs. Run after `dvc repro split`:

    .venv/bin/python -m benchmarks.perf.tune_workers --trials 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import yaml

from benchmarks import ROOT
from patchunet import stack
from patchunet.tuning.study import open_storage


def run_study(team: stack.Stack, workers: int, trials: int, patch_size: int) -> tuple[float, list[float]]:
    """(wall seconds of `patchunet tune --workers N`, each trial's seconds)."""
    name = f"bench-{workers}w-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="patchunet-tune-bench-") as tmp:
        project = Path(tmp)
        (project / "data").symlink_to(ROOT / "data")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["tune"].update(
            study_name=name,
            storage=team.public_database_url("optuna"),  # the password: PGPASSFILE
            n_trials=trials,
            epochs_per_trial=1,
            pruner="none",
            space={"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        )
        params["patch"].update(size=patch_size, stride=patch_size)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "MLFLOW_TRACKING_URI": team.tracking_uri}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "pipelines/tune.py"), "--workers", str(workers)],
            cwd=project, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - started
        shutil.rmtree(project / "reports", ignore_errors=True)
    study = optuna.load_study(study_name=name, storage=open_storage(team.public_database_url("optuna")))
    return wall, [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=128)
    args = parser.parse_args()
    with stack.running() as team:
        os.environ["PGPASSFILE"] = team.pgpass_file  # PostgreSQL's password, for tune's workers and this process
        rows = {workers: run_study(team, workers, args.trials, args.patch_size) for workers in (1, 2)}
    for workers, (wall, seconds) in rows.items():
        print(
            f"{workers} worker(s): {args.trials} trials in {wall:.0f} s = {3600 * args.trials / wall:.1f} trials/hour; "
            f"median trial {statistics.median(seconds):.0f} s"
        )
    print(f"2 workers / 1 worker: {rows[1][0] / rows[2][0]:.2f}x the trials per hour")


if __name__ == "__main__":
    main()
