"""The dashboard's data: its settings, and every MLflow read and model load, cached.

MLflow is read only here, only through `patchunet.tracking`, and every query is cached for
QUERY_TTL_S so that moving between pages never waits on the store. Models load once per version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import tifffile

from patchunet import tracking
from patchunet.core.config import (
    DashboardConfig,
    EvalConfig,
    MlflowConfig,
    PatchConfig,
    TuneConfig,
    load_params,
    parse_section,
)
from patchunet.core.errors import ConfigError, PatchUNetError
from patchunet.tracking import names

import review

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the server log per download

PARAMS_FILE = Path("params.yaml")
QUERY_TTL_S = 30
"""Seconds an MLflow answer is reused: short enough that a new version shows up while you look."""


@dataclasses.dataclass(frozen=True)
class Settings:
    tracking_uri: str
    registered_model: str
    tune_experiment: str
    dashboard: DashboardConfig
    eval: EvalConfig  # for a version that recorded no eval settings of its own
    patch_size: int  # for a version whose run did not log patch.size

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
        patch_size=parse_section(PatchConfig, params, "patch").size,
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
    runs = {}
    for version in versions:
        with contextlib.suppress(PatchUNetError):  # a deleted run leaves its version without params
            runs[version.run_id] = tracking.get_run(version.run_id)
    return review.version_table(versions, runs, ui_url)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def metric_histories(uri: str, run_id: str, metrics: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    tracking.connect(uri)
    return {metric: tracking.metric_history(run_id, metric) for metric in metrics}


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def trials(uri: str, experiment: str) -> pd.DataFrame:
    """Every Optuna trial logged to `experiment`, with its best val Dice (the study's objective).

    A complete trial logged it as its objective; a pruned one has only its per-epoch val Dice.
    """
    tracking.connect(uri)
    runs = tracking.experiment_runs(experiment)
    best = {}
    for run in runs:
        if names.OPTUNA_TRIAL_NUMBER not in run.tags:
            continue
        if names.OBJECTIVE in run.metrics:
            best[run.run_id] = run.metrics[names.OBJECTIVE]
        else:
            values = [value for _, value in tracking.metric_history(run.run_id, names.VAL_DICE)]
            best[run.run_id] = max(values, default=float("nan"))
    return review.trial_table(runs, best)


@st.cache_data(ttl=QUERY_TTL_S, max_entries=32, show_spinner=False)
def artifact_bytes(uri: str, run_id: str, artifact_path: str) -> bytes | None:
    """An artifact's content, or None if the run has none there (yet: evaluation may come later)."""
    tracking.connect(uri)
    with tempfile.TemporaryDirectory() as folder:
        local = tracking.download_artifact(run_id, artifact_path, Path(folder))
        return local.read_bytes() if local is not None and local.is_file() else None


def per_image_scores(uri: str, run_id: str) -> pd.DataFrame | None:
    """The evaluate stage's per-image test scores of a run, indexed by image id, or None."""
    content = artifact_bytes(uri, run_id, names.PER_IMAGE_ARTIFACT)
    return None if content is None else pd.read_csv(io.BytesIO(content)).set_index("image_id")


def logged_prediction(uri: str, run_id: str, image_id: str) -> np.ndarray | None:
    """The instance map the evaluate stage predicted for a sample test image, or None."""
    content = artifact_bytes(uri, run_id, f"{names.SAMPLES_ARTIFACT}/{image_id}_labels.tif")
    return None if content is None else tifffile.imread(io.BytesIO(content))


@st.cache_resource(show_spinner="Loading the model from the registry...")
def model(uri: str, model_name: str, version: int):
    """The registered version's PatchUNet (its weights file, read as plain data), loaded once per
    version and kept for every page and session."""
    tracking.connect(uri)
    return tracking.load_logged_model(f"models:/{model_name}/{version}")


@st.cache_resource(show_spinner="Preparing the model's runtime...")
def network(uri: str, model_name: str, version: int, _cfg: EvalConfig, runtime: tuple[str, str]):
    """That version's network on the runtime `eval.backend` and `eval.precision` name (`runtime`),
    made once per version and runtime."""
    from patchunet.inference.runtimes import runtime_network

    return runtime_network(model(uri, model_name, version), _cfg)


def model_scale(cfg: Settings, version: int) -> float:
    """The µm per pixel of the images the version was trained on."""
    return model(cfg.tracking_uri, cfg.registered_model, version).cfg.microns_per_pixel


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def registered_eval(uri: str, model_name: str, version: int) -> tuple[EvalConfig, int] | None:
    """The eval settings and window that version `version` was registered, scored and is served with
    (the config of the nuclei model `register` logged), or None for a version that recorded none."""
    tracking.connect(uri)
    config = tracking.model_config(f"models:/{model_name}/{version}")
    if config is None or "eval" not in config:
        return None
    try:
        return EvalConfig(**config["eval"]), int(config["window"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:  # settings of an older `eval` section
        raise PatchUNetError(f"{model_name} v{version}: its registered eval settings cannot be used ({exc})") from None


@dataclasses.dataclass(frozen=True)
class VersionEval:
    """The eval settings and sliding window a version segments with live."""

    cfg: EvalConfig
    window: int
    recorded: bool  # its own registered settings; False: params.yaml's, as it recorded none

    @property
    def source(self) -> str:
        return "its registered eval settings" if self.recorded else "the eval params of params.yaml"


def version_eval(cfg: Settings, table: pd.DataFrame, version: int) -> VersionEval:
    """The settings version `version` was registered and scored with, so that it is shown under the
    protocol of its scores; params.yaml's `eval`, with its patch size's window, only for a version
    that recorded none."""
    recorded = registered_eval(cfg.tracking_uri, cfg.registered_model, version)
    if recorded is not None:
        return VersionEval(*recorded, recorded=True)
    size_multiple = model(cfg.tracking_uri, cfg.registered_model, version).cfg.size_multiple
    return VersionEval(cfg.eval, cfg.eval.window_for(patch_size(cfg, table, version), size_multiple), recorded=False)


@st.cache_data(max_entries=16, show_spinner=False)
def segment(
    uri: str,
    model_name: str,
    version: int,
    window: int,
    cfg: EvalConfig,
    image_mpp: float,
    image_sha1: str,
    _image: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Instance labels of `_image`, at `image_mpp` µm per pixel, by that version with `cfg` and
    `window`, as `patchunet predict` makes them (resampled to the model's scale and the labels
    back), and the seconds taken.

    Keyed by the image's SHA-1: Streamlit hashes only a sample of a large array's pixels.
    """
    from patchunet.inference.nuclei import segment_nuclei

    runtime = network(uri, model_name, version, cfg, (cfg.backend, cfg.precision))
    started = time.perf_counter()
    labels = segment_nuclei(runtime, _image, cfg, window, image_mpp)[0]
    return labels, time.perf_counter() - started


def patch_size(cfg: Settings, table: pd.DataFrame, version: int) -> int:
    """The patch size the version trained on (its window for live inference), else params.yaml's."""
    logged = table.set_index("version").loc[version, "patch"]
    return cfg.patch_size if pd.isna(logged) else int(logged)


@dataclasses.dataclass(frozen=True)
class LiveSegmentation:
    labels: np.ndarray  # (H, W) int32 instance labels
    seconds: float
    settings: VersionEval


def segment_upload(
    cfg: Settings, table: pd.DataFrame, version: int, image: np.ndarray, image_mpp: float | None = None
) -> LiveSegmentation:
    """`segment` with the version's own eval settings and window (`version_eval`); an `image_mpp`
    of None is the model's own scale."""
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    settings = version_eval(cfg, table, version)
    mpp = model_scale(cfg, version) if image_mpp is None else image_mpp
    labels, seconds = segment(
        cfg.tracking_uri, cfg.registered_model, version, settings.window, settings.cfg, mpp, digest, image
    )
    return LiveSegmentation(labels, seconds, settings)
