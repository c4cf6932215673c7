"""What the dashboard shows, computed from MLflow records: tables, comparisons, curves, studies.

Pure functions of the runs and versions that `tracking` reads (its RunSummary and VersionSummary
records), so that everything the review app displays is tested without a browser; the app only
fetches, caches and lays out. It lives beside the app, as plotly does: the core package needs neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from patchunet.tracking import names
from patchunet.tracking.records import RunSummary, VersionSummary

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from pandas.io.formats.style import Styler

SCORE_COLUMNS = {"Dice": "dice", "IoU": "iou", "AJI": "aji", "AJI+": "aji_plus", "PQ": "pq", "F1": "f1"}
"""Table column -> test score: per-image means on the official test set, tagged by `evaluate`."""
PARAM_COLUMNS = {
    "lr": names.LR_PARAM,
    "patch": names.PATCH_SIZE_PARAM,
    "width": names.BASE_CHANNELS_PARAM,
    "depth": names.DEPTH_PARAM,
}
LOWER_IS_BETTER = ("parameters", "s/image")
CURVE_METRICS = (names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_DICE)
BEST_STYLE = "background-color: rgba(0, 200, 0, 0.25); font-weight: bold"


def version_table(versions: Sequence[VersionSummary], runs: Mapping[str, RunSummary], ui_url: str) -> pd.DataFrame:
    """One row per registered version, newest first, with scores, key params, size, speed and a run link.

    A score is missing (NaN) for a version registered before `register` came after `evaluate` and
    never evaluated; params, size and link are missing where its run is not in `runs`.
    """
    rows = []
    for version in versions:
        run = runs.get(version.run_id)  # None once the run is deleted: its version keeps only its tags
        params, metrics = (run.params, run.metrics) if run else ({}, {})
        scores = version.scores
        rows.append(
            {
                "version": version.version,
                "aliases": ", ".join(version.aliases),
                "heads": instance_heads(version.tags, params),
                **{column: _number(scores.get(score)) for column, score in SCORE_COLUMNS.items()},
                **{column: _number(params.get(key)) for column, key in PARAM_COLUMNS.items()},
                "parameters": _number(metrics.get(names.PARAMETER_COUNT)),
                "s/image": _number(scores.get("seconds_per_image")),
                "created": pd.Timestamp(version.created_ms, unit="ms"),
                "run": run_link(ui_url, run.experiment_id, run.run_id) if run else None,
                "run_id": version.run_id,
            }
        )
    columns = ["version", "aliases", "heads", *SCORE_COLUMNS, *PARAM_COLUMNS, "parameters", "s/image", "created"]
    columns += ["run", "run_id"]
    return pd.DataFrame(rows, columns=columns)


def instance_heads(version_tags: Mapping[str, str], run_params: Mapping[str, str]) -> str:
    """What the version predicts: "foreground" alone, or "foreground + <instance head>".

    Versions registered before instance heads existed name none: they are foreground-only.
    """
    head = version_tags.get(names.INSTANCE_HEAD_TAG) or run_params.get(names.INSTANCE_HEAD_PARAM) or "none"
    return "foreground" if head == "none" else f"foreground + {head}"


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def run_link(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_url_for(tracking_uri: str, configured_ui_url: str) -> str:
    """A tracking server is its own UI; a local store is shown by `mlflow ui` at the configured URL."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else configured_ui_url


def version_label(table: pd.DataFrame, version: int) -> str:
    """'v3 (champion)': how versions are named in pickers and legends."""
    aliases = table.loc[table["version"] == version, "aliases"]
    named = aliases.iloc[0] if len(aliases) else ""
    return f"v{version} ({named})" if named else f"v{version}"


def highlight_best(table: pd.DataFrame) -> Styler:
    """The table with the best value of each score (highest), size and speed (lowest) highlighted; ties all are."""
    return table.style.highlight_max(subset=list(SCORE_COLUMNS), props=BEST_STYLE).highlight_min(
        subset=list(LOWER_IS_BETTER), props=BEST_STYLE
    )


def score_comparison(table: pd.DataFrame, versions: Sequence[int]) -> pd.DataFrame:
    """Long form (version, score, value) of the test scores of `versions`, in the order given."""
    chosen = table.set_index("version").loc[list(versions), list(SCORE_COLUMNS)]
    long = chosen.reset_index().melt(id_vars="version", var_name="score", value_name="value")
    long["version"] = [version_label(table, v) for v in long["version"]]
    return long


def comparison_figure(comparison: pd.DataFrame) -> go.Figure:
    """Grouped bars: one group per score, one bar per version."""
    import plotly.express as px

    figure = px.bar(comparison, x="score", y="value", color="version", barmode="group", text_auto=".3f")
    figure.update_layout(yaxis_title="test score (per-image mean)", xaxis_title=None, legend_title=None)
    return figure.update_yaxes(range=[0, 1])


def curve_table(histories: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> pd.DataFrame:
    """Long form (version, metric, epoch, value) from {version label: {metric: [(step, value)]}}."""
    rows = [
        {"version": label, "metric": metric, "epoch": step, "value": value}
        for label, metrics in histories.items()
        for metric, points in metrics.items()
        for step, value in points
    ]
    return pd.DataFrame(rows, columns=["version", "metric", "epoch", "value"])


def curves_figure(curves: pd.DataFrame) -> go.Figure:
    """One panel per metric, the versions overlaid, each panel on its own y scale."""
    import plotly.express as px

    figure = px.line(curves, x="epoch", y="value", color="version", facet_col="metric", markers=True)
    figure.update_yaxes(matches=None, showticklabels=True)
    figure.for_each_annotation(lambda a: a.update(text=a.text.removeprefix("metric=")))
    return figure.update_layout(legend_title=None)


def trial_table(runs: Sequence[RunSummary], best_values: Mapping[str, float]) -> pd.DataFrame:
    """One row per Optuna trial logged by `patchunet tune`: study, trial, state, value and searched params.

    Trials are the child runs of each study's parent run; `best_values` holds each trial's best
    val Dice (the objective), by run id. Pruned trials keep the value at which they were stopped.
    """
    studies = {run.run_id: run.tags.get(names.OPTUNA_STUDY, run.name) for run in runs}
    rows = []
    for run in runs:
        parent = run.parent_run_id
        if parent is None or names.OPTUNA_TRIAL_NUMBER not in run.tags:
            continue
        searched = {k: _number(v) for k, v in run.params.items() if k not in (names.TRIAL_PARAM, names.EPOCHS_PARAM)}
        rows.append(
            {
                "study": studies.get(parent, parent),
                "trial": int(run.tags[names.OPTUNA_TRIAL_NUMBER]),
                "state": run.tags.get(names.OPTUNA_STATE, run.status),
                "val dice": best_values.get(run.run_id, float("nan")),
                **searched,
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values(["study", "trial"], ignore_index=True) if rows else table


def optimisation_history(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` of one study by trial number, with the best value so far among complete trials."""
    ordered = trials.sort_values("trial", ignore_index=True)
    complete = ordered["val dice"].where(ordered["state"] == "COMPLETE")
    return ordered.assign(best_so_far=complete.cummax().ffill())


def history_figure(history: pd.DataFrame) -> go.Figure:
    """Each trial's value, coloured by state, and the best complete value so far as a step line."""
    import plotly.express as px

    figure = px.scatter(history, x="trial", y="val dice", color="state", symbol="state")
    figure.add_scatter(x=history["trial"], y=history["best_so_far"], mode="lines", name="best so far", line_shape="hv")
    return figure.update_layout(yaxis_title="best val Dice of the trial", legend_title=None)


def lr_patch_figure(trials: pd.DataFrame) -> go.Figure:
    """Learning rate (log scale) against patch size, each trial coloured by its value."""
    import plotly.express as px

    figure = px.scatter(
        trials,
        x=names.LR_PARAM,
        y=names.PATCH_SIZE_PARAM,
        color="val dice",
        symbol="state",
        log_x=True,
        hover_data=["trial"],
    )
    figure.update_traces(marker_size=14)
    figure.update_layout(legend={"orientation": "h", "y": -0.25, "title": None})  # clear of the colour bar
    return figure.update_layout(xaxis_title="learning rate", yaxis_title="patch size (px)")


def zoom_region(shape: tuple[int, int], zoom: float, centre: tuple[float, float]) -> tuple[slice, slice]:
    """The rows and columns of a 1/zoom-sized window around `centre` (fractions of height and width),
    shifted to lie inside the image."""
    region = []
    for side, fraction in zip(shape, centre, strict=True):
        extent = max(1, round(side / zoom))
        start = int(np.clip(round(fraction * side - extent / 2), 0, side - extent))
        region.append(slice(start, start + extent))
    return region[0], region[1]
