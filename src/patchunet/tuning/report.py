"""What a study reports: the best params and the command that applies them, one row per trial,
figures, and the summary on the study's MLflow parent run."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna

from patchunet import tracking
from patchunet.core.config import Dimension, TuneConfig
from patchunet.tracking import names
from patchunet.tuning.space import apply_overrides

log = logging.getLogger(__name__)


def best_params(study: optuna.Study, cfg: TuneConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The best trial's values as params.yaml sections, and the one command that applies them."""
    best = study.best_trial
    overrides = apply_overrides(params, best.params)
    changed = {key for key in best.params} | ({"patch.stride"} if "patch.size" in best.params else set())
    sections: dict[str, dict[str, Any]] = {}
    for key in sorted(changed):
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = overrides[section][name]
    settings = " ".join(f"-S {key}={overrides[key.split('.')[0]][key.split('.')[1]]}" for key in sorted(changed))
    return {
        "study": cfg.study_name,
        "best_trial": best.number,
        "val_dice": best.value,
        "params": sections,
        "apply": f"dvc exp run {settings}",
    }


def trial_rows(study: optuna.Study, dimensions: list[Dimension]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, epochs run, seconds and the searched values."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "val_dice": trial.value,
                "epochs": len(trial.intermediate_values),
                "seconds": round(seconds, 1) if seconds is not None else None,
                **{d.key: trial.params.get(d.key) for d in dimensions},
            }
        )
    return rows


def write_figures(study: optuna.Study, dimensions: list[Dimension], folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and the lr x patch-size contour, as HTML
    (plotly) and PNG (matplotlib). A figure the study cannot support yet is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as plotly_vis
    import optuna.visualization.matplotlib as mpl_vis

    keys = [d.key for d in dimensions]
    figures: dict[str, tuple[str, dict]] = {
        "optimization_history": ("plot_optimization_history", {}),
        "param_importances": ("plot_param_importances", {}),
        "contour": ("plot_contour", {"params": keys[:2]}) if len(keys) >= 2 else ("plot_slice", {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (function, kwargs) in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
            try:
                getattr(plotly_vis, function)(study, **kwargs).write_html(folder / f"{name}.html")
                axes = getattr(mpl_vis, function)(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.warning(f"tune: figure {name} skipped ({exc})")
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written += [folder / f"{name}.html", folder / f"{name}.png"]
    return written


def log_summary(study: optuna.Study, cfg: TuneConfig, best: dict[str, Any], states: list[str], reports: Path) -> None:
    """The best value and trial, trial counts, the best values and tune settings as tags, and the
    `reports` folder, on the active run (the study's parent run)."""
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
    tracking.log_artifact(reports)
