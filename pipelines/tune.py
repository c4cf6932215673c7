"""DVC stage `tune` (tune/dvc.yaml): an Optuna study over `tune.space`, tracked in MLflow.

Creates or resumes the study `tune.study_name` in `tune.storage` and runs trials until it holds
`tune.n_trials` finished (complete or pruned) ones, in `--workers` processes sharing the storage.
The study has one MLflow parent run in `tune.experiment`; each trial is a child run. Writes
reports/tune/best_params.yaml, reports/tune/trials.csv and reports/tune/figures/, and logs them,
with the best value and params, to the parent run.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import yaml

from patchunet import tracking
from patchunet.cli import run_stage
from patchunet.config import AugmentConfig, MlflowConfig, TuneConfig, load_params, parse_section
from patchunet.errors import ConfigError, PatchUNetError
from patchunet.io import atomic_directory, read_rgb_image
from patchunet.layout import RAW_DIR, SPLIT_FILE, TUNE_DIR, labels_dir
from patchunet.monuseg import raw_dirs
from patchunet.split import read_split
from patchunet.tracking import names
from patchunet.tune import (
    PARENT_RUN_ATTR,
    Objective,
    PatchCache,
    best_params,
    check_settings,
    counted_trials,
    enqueue_defaults,
    load_study,
    run_worker,
    settings_fingerprint,
    trial_rows,
    validate_space,
    write_figures,
)

IMAGES = raw_dirs(RAW_DIR).images["train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, help="processes sharing the study (default: tune.workers)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set for the worker processes
    args = parser.parse_args()
    params = load_params(args.params)
    cfg = parse_section(TuneConfig, params, "tune")
    workers = args.workers or cfg.workers
    if workers < 1:
        raise ConfigError("tune.workers", f"--workers must be 1 or more, got {workers}")
    if workers > 1 and cfg.storage.startswith("sqlite"):
        raise ConfigError(
            "tune.storage",
            f"{cfg.storage} cannot serve {workers} worker processes safely; use journal:optuna.journal "
            "(one machine) or a PostgreSQL URL (several)",
        )
    split = read_split(SPLIT_FILE)
    first_image = read_rgb_image(IMAGES / f"{split['train'][0]}.tif")
    validate_space(cfg, params, min(first_image.shape[:2]))
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))

    if args.worker_index is not None:
        run_trials(cfg, params, split, args.worker_index)
        return

    study = load_study(cfg)
    check_settings(study, settings_fingerprint(cfg, params))
    if enqueue_defaults(study, cfg.dimensions, params):
        print("tune: trial 0 runs the params.yaml values, as the untuned baseline")
    parent_run_id = parent_run(study, cfg)
    before = counted_trials(study)
    print(f"tune: study {cfg.study_name} in {cfg.storage} holds {before} of {cfg.n_trials} trials; {workers} worker(s)")
    if workers == 1:
        run_trials(cfg, params, split, 0)
    else:
        command = [sys.executable, __file__, "--params", str(args.params)]
        processes = [subprocess.Popen([*command, "--worker-index", str(i)]) for i in range(workers)]
        exit_codes = [process.wait() for process in processes]  # every worker, even after one fails
        if any(exit_codes):
            raise PatchUNetError("tune: a worker process failed; see its output above")
    summarise(load_study(cfg), cfg, params, parent_run_id)


def parent_run(study, cfg: TuneConfig) -> str:
    """The study's MLflow parent run: the one it recorded, or a new one if there is none yet."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id:
        try:
            tracking.get_run(run_id)
            return run_id
        except PatchUNetError:
            print(f"tune: parent run {run_id} is not in this MLflow store; starting a new one")
    with tracking.run(cfg.experiment, run_name=cfg.study_name, tags={names.OPTUNA_STUDY: cfg.study_name}) as active:
        run_id = active.run_id
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id


def run_trials(cfg: TuneConfig, params: dict, split: dict, worker_index: int) -> None:
    """One worker process (or the only one): trials until the study holds tune.n_trials."""
    study = load_study(cfg, worker_index)
    augment = parse_section(AugmentConfig, params, "augment")
    objective = Objective(
        params,
        cfg,
        PatchCache(split, IMAGES, labels_dir("train"), augment),
        study.user_attrs[PARENT_RUN_ATTR],
        log=lambda line: print(f"[worker {worker_index}] {line}" if worker_index else line, flush=True),
    )
    run_worker(study, objective, cfg.n_trials)


def summarise(study, cfg: TuneConfig, params: dict, parent_run_id: str) -> None:
    """reports/tune/ and the parent run: best value and params, trials table, figures."""
    rows = trial_rows(study, cfg.dimensions)
    states = [row["state"] for row in rows]
    if "COMPLETE" not in states:
        raise PatchUNetError(f"tune: no trial of study {cfg.study_name} completed ({len(rows)} trials: {states})")
    best = best_params(study, cfg, params)
    with atomic_directory(TUNE_DIR) as staging:
        (staging / "best_params.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
        with (staging / "trials.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        figures = write_figures(study, cfg.dimensions, staging / "figures")
    with tracking.run(cfg.experiment, run_id=parent_run_id):
        tracking.log_metrics(
            {
                names.BEST_VAL_DICE: best["val_dice"],
                names.BEST_TRIAL: best["best_trial"],
                names.TRIALS_COMPLETE: states.count("COMPLETE"),
                names.TRIALS_PRUNED: states.count("PRUNED"),
            }
        )
        tracking.set_tags(
            {
                **{f"best.{key}": value for key, value in study.best_trial.params.items()},
                "tune.n_trials": cfg.n_trials,
                "tune.epochs_per_trial": cfg.epochs_per_trial,
                "tune.pruner": cfg.pruner,
                "tune.storage": cfg.storage,
            }
        )
        tracking.log_artifact(TUNE_DIR)
    print(
        f"tune: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed; best val dice {best['val_dice']:.4f} (trial {best['best_trial']}) "
        f"with {best['params']}; {len(figures) // 2} figures in {TUNE_DIR / 'figures'}"
    )
    print(f"tune: apply with `{best['apply']}`, or copy the values into params.yaml")


if __name__ == "__main__":
    run_stage(main)
