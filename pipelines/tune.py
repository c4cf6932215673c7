"""DVC stage `tune` (tune/dvc.yaml): an Optuna study over `tune.space`, tracked in MLflow.

Creates or resumes the study `tune.study_name` in `tune.storage` and runs trials until it holds
`tune.n_trials` finished ones, in `--workers` processes sharing the storage; on PostgreSQL storage
the same command on other machines joins the study. Writes reports/tune/best_params.yaml,
reports/tune/trials.csv and reports/tune/figures/: patchunet.stages.tune.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from patchunet.core.config import load_params
from patchunet.core.console import log_to_stdout, run_stage
from patchunet.stages import tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, help="processes sharing the study (default: tune.workers)")
    # set for the worker processes: the CPUs each may run on
    parser.add_argument("--worker", metavar="CPUS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    log_to_stdout(f"[worker {os.getpid()}] " if args.worker else "")
    params = load_params(args.params)
    if args.worker:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.worker.split(",")})
        tune.run_worker(params, Path())
        return
    worker = [sys.executable, __file__, "--params", str(args.params), "--worker"]
    tune.run(params, Path(), workers=args.workers, worker_command=worker)


if __name__ == "__main__":
    run_stage(main)
