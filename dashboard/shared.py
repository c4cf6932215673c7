"""What every page of the dashboard uses: settings, cached MLflow reads, cached models, the version picker.

MLflow is read only here, only through `patchunet.tracking`, and every query is cached for
QUERY_TTL_S so that moving between pages never waits on the store. Models load once per version.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import tifffile

from patchunet import review, tracking
from patchunet.config import DashboardConfig, EvalConfig, MlflowConfig, TuneConfig, load_params, parse_section
from patchunet.errors import PatchUNetError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the server log per download

PARAMS_FILE = Path("params.yaml")
QUERY_TTL_S = 30
"""Seconds an MLflow answer is reused: short enough that a new version shows up while you look."""
CURVE_METRICS = review.CURVE_METRICS


@dataclasses.dataclass(frozen=True)
class Settings:
    tracking_uri: str
    registered_model: str
    tune_experiment: str
    dashboard: DashboardConfig
    eval: EvalConfig

    @property
    def ui_url(self) -> str:
        return review.ui_url_for(self.tracking_uri, self.dashboard.mlflow_ui_url)


def settings() -> Settings:
    """From params.yaml in the working folder (the project root), as the DVC stages read it."""
    params = load_params(PARAMS_FILE)
    mlflow_cfg = parse_section(MlflowConfig, params, "mlflow")
    return Settings(
        tracking_uri=tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri),
        registered_model=mlflow_cfg.registered_model,
        tune_experiment=parse_section(TuneConfig, params, "tune").experiment,
        dashboard=parse_section(DashboardConfig, params, "dashboard"),
        eval=parse_section(EvalConfig, params, "eval"),
    )


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def connection_problem(uri: str) -> str | None:
    """Why the store at `uri` cannot be read, in one line, or None. Never creates a store."""
    database = tracking.sqlite_file(uri)
    if database is not None and not database.is_file():
        return f"There is no MLflow store at {database.resolve()} yet."
    try:
        tracking.connect(uri)
    except PatchUNetError as exc:
        return str(exc)
    return None


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def version_table(uri: str, model_name: str, ui_url: str) -> pd.DataFrame:
    tracking.connect(uri)
    versions = tracking.list_versions(model_name)
    runs = {v.run_id: tracking.get_run(v.run_id) for v in versions}
    return review.version_table(versions, tracking.registered_aliases(model_name), runs, ui_url)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def metric_histories(uri: str, run_id: str, metrics: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    tracking.connect(uri)
    return {metric: tracking.metric_history(run_id, metric) for metric in metrics}


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def trials(uri: str, experiment: str) -> pd.DataFrame:
    """Every Optuna trial logged to `experiment`, with its best val Dice (the study's objective)."""
    tracking.connect(uri)
    runs = tracking.experiment_runs(experiment)
    best = {}
    for run in runs:
        if "optuna.trial_number" in run.data.tags:
            values = [value for _, value in tracking.metric_history(run.info.run_id, "val/dice")]
            best[run.info.run_id] = max(values, default=float("nan"))
    return review.trial_table(runs, best)


@st.cache_data(max_entries=256, show_spinner=False)
def artifact_bytes(uri: str, run_id: str, artifact_path: str) -> bytes | None:
    """An artifact's content, or None if the run has none there; logged artifacts never change."""
    tracking.connect(uri)
    with tempfile.TemporaryDirectory() as folder:
        local = tracking.download_artifact(run_id, artifact_path, Path(folder))
        return local.read_bytes() if local is not None and local.is_file() else None


def per_image_scores(uri: str, run_id: str) -> pd.DataFrame | None:
    """The evaluate stage's per-image test scores of a run, indexed by image id, or None."""
    content = artifact_bytes(uri, run_id, "evaluation/test_per_image.csv")
    return None if content is None else pd.read_csv(io.BytesIO(content)).set_index("image_id")


def logged_prediction(uri: str, run_id: str, image_id: str) -> np.ndarray | None:
    """The instance map the evaluate stage predicted for a sample test image, or None."""
    content = artifact_bytes(uri, run_id, f"evaluation/samples/{image_id}_labels.tif")
    return None if content is None else tifffile.imread(io.BytesIO(content))


@st.cache_resource(max_entries=4, show_spinner="Loading the model from the registry...")
def model(uri: str, model_name: str, version: int):
    """The registered PyTorch model, loaded once per version and kept for every page and session."""
    tracking.connect(uri)
    return tracking.load_pytorch_model(f"models:/{model_name}/{version}")


@st.cache_data(max_entries=16, show_spinner=False)
def segment(
    uri: str, model_name: str, version: int, patch_size: int, cfg: EvalConfig, image: np.ndarray
) -> tuple[np.ndarray, float]:
    """Instance labels of `image` by that version, as `patchunet predict` makes them, and the seconds taken."""
    from patchunet.inference import segment_image

    network = model(uri, model_name, version)
    window = cfg.window_for(patch_size, network.cfg.size_multiple)
    started = time.perf_counter()
    _, labels = segment_image(network, image, cfg, window)
    return labels, time.perf_counter() - started


def registered_versions_or_stop(cfg: Settings) -> pd.DataFrame:
    """The version table; with none registered, a page that says what to run, and nothing more."""
    table = version_table(cfg.tracking_uri, cfg.registered_model, cfg.ui_url)
    if table.empty:
        st.info(
            f"No version of the model **{cfg.registered_model}** is registered in `{cfg.tracking_uri}` yet.\n\n"
            "Run `dvc repro` (or `patchunet train`, then `patchunet evaluate` and `patchunet register`) to train, "
            "evaluate and register one, then press **Refresh** in the sidebar."
        )
        st.stop()
    return table


def pick_versions(table: pd.DataFrame, label: str, key: str, limit: int | None = None) -> list[int]:
    """A version multiselect that remembers the choice across pages (widget state alone is per page)."""
    options = table["version"].tolist()
    remembered = [v for v in st.session_state.get("chosen_versions", options[:2]) if v in options][:limit]
    chosen = st.multiselect(
        label,
        options,
        default=remembered,
        format_func=lambda v: review.version_label(table, v),
        max_selections=limit,
        key=key,
    )
    st.session_state["chosen_versions"] = chosen
    return chosen


def champion_index(table: pd.DataFrame) -> int:
    """Row of the champion in `table`, else of the newest version."""
    holders = table.index[table["aliases"].str.split(", ").apply(lambda names: "champion" in names)]
    return int(holders[0]) if len(holders) else 0
