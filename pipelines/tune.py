"""DVC stage `tune` (tune/dvc.yaml): an Optuna study over `tune.space`, tracked in MLflow.

Creates or resumes the study `tune.study_name` in `tune.storage` and runs trials until it holds
`tune.n_trials` finished (complete or pruned) ones, in `--workers` processes sharing the storage.
On PostgreSQL storage the same command on other machines (same repo, same storage URL) joins the
study with its own workers; whichever finishes last writes the complete summary.
The study has one MLflow parent run in `tune.experiment`; each trial is a child run. Writes
reports/tune/best_params.yaml, reports/tune/trials.csv and reports/tune/figures/, and logs them,
with the best value and params, to the parent run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from patchunet import tracking
from patchunet.core.config import AugmentConfig, MlflowConfig, TuneConfig, load_params, parse_section
from patchunet.core.console import log_to_stdout, run_stage
from patchunet.core.errors import PatchUNetError
from patchunet.core.files import atomic_directory, write_csv
from patchunet.core.paths import RAW_DIR, SPLIT_FILE, TUNE_DIR, labels_dir
from patchunet.core.resources import cpu_share
from patchunet.data.monuseg import raw_dirs
from patchunet.data.split import read_split
from patchunet.io.images import read_rgb_image
from patchunet.tuning.objective import PatchCache
from patchunet.tuning.report import best_params, log_summary, trial_rows, write_figures
from patchunet.tuning.space import validate_space
from patchunet.tuning.study import (
    check_settings,
    enqueue_defaults,
    load_study,
    parent_run,
    settings_fingerprint,
    study_lock,
)
from patchunet.tuning.workers import check_workers, counted_trials, run_trials

IMAGES = raw_dirs(RAW_DIR).images["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, help="processes sharing the study (default: tune.workers)")
    # set for the worker processes: the CPUs each may run on
    parser.add_argument("--worker", metavar="CPUS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    log_to_stdout(f"[worker {os.getpid()}] " if args.worker else "")
    if args.worker:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.worker.split(",")})
    params = load_params(args.params)
    cfg = parse_section(TuneConfig, params, "tune")
    workers = args.workers or cfg.workers
    check_workers(cfg, workers)
    split = read_split(SPLIT_FILE)
    validate_space(cfg, params, min(read_rgb_image(IMAGES / f"{split['train'][0]}.tif").shape[:2]))
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))
    patch_sets = PatchCache(split, IMAGES, labels_dir("train"), parse_section(AugmentConfig, params, "augment"))
    if args.worker:
        run_trials(cfg, params, patch_sets)
        return

    with study_lock(cfg)():  # workers on other machines may be setting up the same study
        study = load_study(cfg)
        check_settings(study, settings_fingerprint(cfg, params))
        if enqueue_defaults(study, cfg.dimensions, params):
            print("tune: trial 0 runs the params.yaml values, as the untuned baseline")
        parent_run_id = parent_run(study, cfg)
    held = counted_trials(study)
    print(
        f"tune: study {cfg.study_name} in {shown_storage(cfg.storage)} holds {held} of {cfg.n_trials} trials; "
        f"{workers} worker(s)"
    )
    if workers == 1:
        run_trials(cfg, params, patch_sets)
    else:
        command = [sys.executable, __file__, "--params", str(args.params), "--worker"]
        cpus = [",".join(map(str, sorted(cpu_share(i, workers)))) for i in range(workers)]
        processes = [subprocess.Popen([*command, share]) for share in cpus]
        if any([process.wait() for process in processes]):  # a list: wait for every worker, even after one fails
            raise PatchUNetError("tune: a worker process failed; see its output above")
    summarise(load_study(cfg), cfg, params, parent_run_id)


def shown_storage(storage: str) -> str:
    """`tune.storage` for the console: a database URL with its password as `***`; anything else
    (a `journal:` file) as it is."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if storage.startswith("journal:"):  # a file, which open_storage reads, not a URL
        return storage
    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL
        return storage


def summarise(study: optuna.Study, cfg: TuneConfig, params: dict, parent_run_id: str) -> None:
    """reports/tune/ and the parent run: best value and params, trials table, figures."""
    rows = trial_rows(study, cfg.dimensions)
    states = [row["state"] for row in rows]
    if "COMPLETE" not in states:
        raise PatchUNetError(f"tune: no trial of study {cfg.study_name} completed ({len(rows)} trials: {states})")
    best = best_params(study, cfg, params)
    with atomic_directory(TUNE_DIR) as staging:
        (staging / "best_params.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
        write_csv(staging / "trials.csv", rows)
        figures = write_figures(study, cfg.dimensions, staging / "figures")
    with tracking.run(cfg.experiment, run_id=parent_run_id):
        log_summary(study, cfg, best, states, TUNE_DIR)
    print(
        f"tune: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed; best val dice {best['val_dice']:.4f} (trial {best['best_trial']}) "
        f"with {best['params']}; {len(figures) // 2} figures in {TUNE_DIR / 'figures'}"
    )
    print(f"tune: apply with `{best['apply']}`, or copy the values into params.yaml")


if __name__ == "__main__":
    run_stage(main)
