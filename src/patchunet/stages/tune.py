"""Stage `tune` (tune/dvc.yaml): an Optuna study over `tune.space`, tracked in MLflow.

Creates or resumes the study `tune.study_name` in `tune.storage` and runs trials until it holds
`tune.n_trials` finished (complete or pruned) ones, in `workers` processes sharing the storage.
On PostgreSQL storage the same command on other machines (same repo, same storage URL) joins the
study with its own workers; whichever finishes last writes the complete summary.
The study has one MLflow parent run in `tune.experiment`; each trial is a child run. Writes
reports/tune/best_params.yaml, reports/tune/trials.csv and reports/tune/figures/, and logs them,
with the best value and params, to the parent run.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

from patchunet import tracking
from patchunet.core.config import AugmentConfig, MlflowConfig, TuneConfig, parse_section
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


@dataclasses.dataclass(frozen=True)
class TuneSummary:
    report_dir: Path
    best: dict
    """What reports/tune/best_params.yaml holds: the best value, trial, params and how to apply them."""
    states: list[str]
    """Each trial's state (COMPLETE, PRUNED, FAIL...), by trial number."""


def run(params: dict, root: Path, *, workers: int | None = None, worker_command: Sequence[str] = ()) -> TuneSummary:
    """Run the study to `tune.n_trials` and write its summary.

    `workers` (default tune.workers): processes sharing the study. With more than one, each is
    `worker_command` with its CPUs (comma-separated) appended: a command that calls `run_worker`.
    """
    cfg = parse_section(TuneConfig, params, "tune")
    workers = workers or cfg.workers
    check_workers(cfg, workers)
    patch_sets = checked_patch_cache(params, root, cfg)

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
        if not worker_command:
            raise PatchUNetError(f"tune: {workers} workers need a command that starts one")
        cpus = [",".join(map(str, sorted(cpu_share(i, workers)))) for i in range(workers)]
        processes = [subprocess.Popen([*worker_command, share]) for share in cpus]
        if any([process.wait() for process in processes]):  # a list: wait for every worker, even after one fails
            raise PatchUNetError("tune: a worker process failed; see its output above")
    return summarise(load_study(cfg), cfg, params, parent_run_id, root)


def run_worker(params: dict, root: Path) -> None:
    """One of `run`'s worker processes: trials until the study holds `tune.n_trials`."""
    cfg = parse_section(TuneConfig, params, "tune")
    run_trials(cfg, params, checked_patch_cache(params, root, cfg))


def checked_patch_cache(params: dict, root: Path, cfg: TuneConfig) -> PatchCache:
    """The trials' patch sets, cut on demand from the split's images, once the space and the MLflow
    store are checked."""
    split = read_split(root / SPLIT_FILE)
    images = raw_dirs(root / RAW_DIR).images["train"]
    validate_space(cfg, params, min(read_rgb_image(images / f"{split['train'][0]}.tif").shape[:2]))
    tracking.connect(tracking.resolve_tracking_uri(parse_section(MlflowConfig, params, "mlflow").tracking_uri))
    return PatchCache(split, images, root / labels_dir("train"), parse_section(AugmentConfig, params, "augment"))


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


def summarise(study: optuna.Study, cfg: TuneConfig, params: dict, parent_run_id: str, root: Path) -> TuneSummary:
    """reports/tune/ and the parent run: best value and params, trials table, figures."""
    rows = trial_rows(study, cfg.dimensions)
    states = [row["state"] for row in rows]
    if "COMPLETE" not in states:
        raise PatchUNetError(f"tune: no trial of study {cfg.study_name} completed ({len(rows)} trials: {states})")
    best = best_params(study, cfg, params)
    report_dir = root / TUNE_DIR
    with atomic_directory(report_dir) as staging:
        (staging / "best_params.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
        write_csv(staging / "trials.csv", rows)
        figures = write_figures(study, cfg.dimensions, staging / "figures")
    with tracking.run(cfg.experiment, run_id=parent_run_id):
        log_summary(study, cfg, best, states, report_dir)
    print(
        f"tune: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed; best val dice {best['val_dice']:.4f} (trial {best['best_trial']}) "
        f"with {best['params']}; {len(figures) // 2} figures in {report_dir / 'figures'}"
    )
    print(f"tune: apply with `{best['apply']}`, or copy the values into params.yaml")
    return TuneSummary(report_dir, best, states)
