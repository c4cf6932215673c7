"""Every MLflow call of the project: tracking URI, experiments, runs, models, registry and aliases.

Reads hand back the records of `records.py`; a store that fails a call raises TrackingError.
The URI is the MLFLOW_TRACKING_URI variable, else `mlflow.tracking_uri` in params.yaml, else the
embedded `sqlite:///mlflow.db` (the registry needs a database). Local stores keep their artifacts
under `mlartifacts/`; a tracking server keeps them where it was told to. A relative SQLite file and
`mlartifacts/` lie in the DVC repo's root (`store_root`), also for a queued DVC experiment, which
runs in a temporary copy of the repo; a run started in a DVC experiment is named and tagged after it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from sqlalchemy.exc import SQLAlchemyError

from patchunet.core.errors import PatchUNetError, TrackingError, first_line
from patchunet.core.files import write_json
from patchunet.core.locking import exclusive_lock
from patchunet.tracking.names import DVC_BASELINE_REV, DVC_EXPERIMENT, MODEL_ARTIFACT, WEIGHTS_ARTIFACT
from patchunet.tracking.records import ActiveRun, RunSummary, VersionSummary

if TYPE_CHECKING:
    from patchunet.model.unet import PatchUNet

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_DIR = Path("mlartifacts")
WEIGHTS_FILE = "patchunet.pt"
HEALTH_TIMEOUT_S = 5

P = ParamSpec("P")
R = TypeVar("R")


def store_call(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, with an MLflow failure (a server that went away, a broken store) raised as one
    TrackingError line, so callers need not know MLflow's exceptions."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (MlflowException, SQLAlchemyError) as exc:  # MLflow does not wrap every database error
            raise TrackingError(f"MLflow at {mlflow.get_tracking_uri()}: {first_line(exc)}") from None

    return wrapper


DVC_ROOT_VARIABLE = "DVC_ROOT"
"""Set by DVC for every stage it runs: the root of the repo the user ran DVC in."""
DVC_EXPERIMENT_VARIABLES = {"DVC_EXP_NAME": DVC_EXPERIMENT, "DVC_EXP_BASELINE_REV": DVC_BASELINE_REV}
"""Set by `dvc exp run` (queued or not) for every stage -> the run tag that keeps each."""


def store_root() -> Path:
    """The folder of the embedded store (a relative SQLite file, `mlartifacts/`): the DVC repo's root.

    `dvc exp run --queue` (and `--temp`) runs the stages in a temporary copy of the repo, under
    .dvc/tmp/exps/, that DVC deletes after the run: a store there would go with it. DVC_ROOT still
    names the repo the user queued from. Outside DVC, the working folder.
    """
    return Path(os.environ.get(DVC_ROOT_VARIABLE) or ".")


def resolve_tracking_uri(configured: str | None) -> str:
    """MLFLOW_TRACKING_URI, else `configured`, else the embedded default, with a relative SQLite
    file made absolute in `store_root()` when the stage runs elsewhere (a queued DVC experiment).

    In the root itself (`dvc repro`, the CLI) a relative URI stays as written.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_TRACKING_URI
    database = sqlite_file(uri)
    if database is None or database.is_absolute() or store_root().resolve() == Path.cwd().resolve():
        return uri
    return f"sqlite:///{(store_root() / database).resolve()}"


def dvc_experiment_tags() -> dict[str, str]:
    """The DVC experiment this process runs in, as run tags; empty outside `dvc exp run`."""
    return {tag: os.environ[variable] for variable, tag in DVC_EXPERIMENT_VARIABLES.items() if os.environ.get(variable)}


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working folder), else None."""
    prefix = "sqlite:///"
    return Path(uri.removeprefix(prefix)) if uri.startswith(prefix) else None


HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
"""MLflow's HTTP client retries a failing server for about 4 minutes by default; these bound it to
under 10 s (waits of 0, 2 and 4 s, plus up to 1 s each, between 4 tries), or 20 s per try for a server that
accepts and never answers. Set the variables to override them."""


def connect(uri: str) -> None:
    """Point MLflow at `uri`, failing at once, with one line, if the store there cannot be used.

    MLflow's own client retries for minutes; a run must never train for an hour and then find
    that it cannot be logged. One cheap query checks the store's API (a server may answer /health
    and still fail every call) and creates a new SQLite store's tables, once, under a lock.
    """
    is_server = uri.startswith(("http://", "https://"))
    if is_server:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        check_health(uri)
    database = sqlite_file(uri)
    # two processes migrating one new SQLite store at once break it for good ("table _alembic_tmp_* exists")
    lock = exclusive_lock(f"mlflow-store:{database.resolve()}") if database else contextlib.nullcontext()
    try:
        with lock:
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    except (MlflowException, SQLAlchemyError) as exc:  # MLflow wraps HTTP errors, not a broken database file
        where = f"MLflow tracking server {uri} answers /health but not its API" if is_server else f"MLflow store {uri}"
        raise PatchUNetError(f"{where}: cannot be used ({first_line(exc)})") from None
    mlflow.set_tracking_uri(uri)


def check_health(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PatchUNetError(
            f"MLflow tracking server {uri} is unreachable ({reason}): start it, or set MLFLOW_TRACKING_URI"
        ) from None


@store_call
def ensure_experiment(name: str) -> str:
    """Id of experiment `name`, created with artifacts under mlartifacts/ for a local store."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    is_server = mlflow.get_tracking_uri().startswith(("http://", "https://"))
    location = None if is_server else (store_root() / ARTIFACT_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextmanager
def run(
    experiment: str,
    run_id: str | None = None,
    *,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[ActiveRun]:
    """Start (or, with `run_id`, reopen) a run, a child of `parent_run_id` if given.

    A new run started in a DVC experiment (`dvc exp run`) carries its name and baseline commit as
    tags, and its name as the run name unless `run_name` is given, so that the MLflow UI and
    `dvc exp show` list the same experiments. A reopened run keeps what it has.
    The run ends FAILED if the block raises, KILLED on Ctrl-C.
    """
    experiment_id = ensure_experiment(experiment)
    if run_id is None:
        found = dvc_experiment_tags()
        tags = {**found, **(tags or {})}
        run_name = run_name or found.get(DVC_EXPERIMENT)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in (tags or {}).items()} or None,
    ) as active:
        try:
            yield ActiveRun(active.info.run_id)
        except KeyboardInterrupt:
            mlflow.end_run(status="KILLED")
            raise


@contextmanager
def recorded_as_running(run_id: str, record: Path) -> Iterator[None]:
    """Note in the file `record`, for the block, that this process runs `run_id`.

    A run killed by SIGKILL (or a power cut) cannot end itself and stays RUNNING in MLflow;
    the record it leaves lets the next start end it FAILED (`fail_abandoned_run`).
    """
    write_json(record, {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()})
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


def fail_abandoned_run(record: Path) -> str | None:
    """End FAILED the run that `record` names if its process on this host is gone and MLflow still
    has it RUNNING; returns its id, else None. The record is removed either way."""
    if not record.is_file():
        return None
    try:
        noted = json.loads(record.read_text())
        run_id, pid, host = str(noted["run_id"]), int(noted["pid"]), str(noted["host"])
    except (ValueError, KeyError, TypeError):  # not a record of ours: nothing to go on
        record.unlink()
        return None
    if host != socket.gethostname() or process_alive(pid):
        return None  # maybe still training: only that process may end it
    record.unlink()
    client = MlflowClient()
    try:
        running = client.get_run(run_id).info.status == "RUNNING"
    except MlflowException:  # a run of another store, or deleted since
        return None
    if not running:
        return None
    client.set_terminated(run_id, status="FAILED")
    return run_id


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists, and sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}, as MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params(flatten(params))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics(dict(metrics), step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log a file, or every file of a folder, to the active run."""
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def get_run(run_id: str) -> RunSummary:
    """The run `run_id` of the current tracking URI, or one line saying it is not there."""
    try:
        return run_summary(MlflowClient().get_run(run_id))
    except MlflowException:
        raise PatchUNetError(f"MLflow run {run_id} not found in {mlflow.get_tracking_uri()}") from None


def run_summary(found: Run) -> RunSummary:
    return RunSummary(
        run_id=found.info.run_id,
        experiment_id=found.info.experiment_id,
        name=found.info.run_name or "",
        status=found.info.status,
        params=dict(found.data.params),
        metrics=dict(found.data.metrics),
        tags=dict(found.data.tags),
    )


def image_signature(channels: int = 1) -> ModelSignature:
    """(N, 3, H, W) float32 images in [0, 1] -> (N, channels, H, W) float32 logits, any N, H, W:
    the foreground, then the instance head's channels."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
    )


def log_model(model: PatchUNet, input_example: np.ndarray, **metadata: object) -> str:
    """Log `model` to the active run as an MLflow "model from code"; returns its model URI.

    The model holds `served_model.py` and, as its artifact `weights`, the file of
    `model.save_model` (config and weights as plain data, with `metadata`). MLflow serves it
    without unpickling anything, and `load_logged_model` reads the weights file alone. The
    patchunet package goes along as code, so it serves where patchunet is not installed.
    """
    import mlflow.pyfunc

    import patchunet
    from patchunet.model.heads import output_channels
    from patchunet.model.unet import save_model

    with tempfile.TemporaryDirectory(prefix="patchunet-model-") as folder:
        weights = Path(folder) / WEIGHTS_FILE
        save_model(model, weights, **metadata)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=Path(__file__).with_name("served_model.py"),
            artifacts={WEIGHTS_ARTIFACT: str(weights)},
            signature=image_signature(output_channels(model.cfg.instance_head)),
            input_example=input_example,
            code_paths=[str(Path(patchunet.__file__).parent)],
        )
    return info.model_uri


def load_logged_model(model_uri: str) -> PatchUNet:
    """The PatchUNet of a logged or registered model, on the CPU in eval mode: `models:/name@alias`,
    `models:/name/3`, `runs:/<run id>/model` or `models:/<model id>`.

    Reads only the model's weights file, as plain data; never unpickles, never runs its code.
    """
    import mlflow.artifacts
    from mlflow.models import Model

    from patchunet.model.unet import load_model

    with tempfile.TemporaryDirectory(prefix="patchunet-model-") as folder:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        except MlflowException as exc:
            raise PatchUNetError(
                f"{model_uri}: no such model in {mlflow.get_registry_uri()} ({first_line(exc)})"
            ) from None
        try:
            weights = Model.load(local).flavors["python_function"]["artifacts"][WEIGHTS_ARTIFACT]["path"]
        except (MlflowException, OSError, KeyError, TypeError):
            raise PatchUNetError(
                f"{model_uri}: not a PatchUNet model with a weights file (one logged before weights files "
                "were, or not a model): train again, or pass a model file"
            ) from None
        return load_model(local / weights)


def version_summary(found: ModelVersion, aliases: Mapping[str, int]) -> VersionSummary:
    number = int(found.version)
    return VersionSummary(
        name=found.name,
        version=number,
        run_id=found.run_id,
        created_ms=int(found.creation_timestamp),
        aliases=tuple(sorted(alias for alias, held in aliases.items() if held == number)),
        tags=dict(found.tags),
    )


@store_call
def register_run_model(name: str, run_id: str, model_uri: str, tags: Mapping[str, Any]) -> VersionSummary:
    """The version of `name` that holds run `run_id`'s model, tagged with `tags`.

    One version per run: the run's newest version if it has one (a store from before `register`
    came after `evaluate` made it at training; or `register` run again), else a new version of
    `model_uri`, created with its tags, so that no version is ever seen without them.
    """
    existing = [v for v in list_versions(name) if v.run_id == run_id]
    if not existing:
        return register_model(model_uri, name, tags)
    set_version_tags(name, existing[0].version, tags)
    return get_version(name, existing[0].version)


@store_call
def register_model(model_uri: str, name: str, tags: Mapping[str, Any]) -> VersionSummary:
    """Register `model_uri` as a new version of `name`, tagged with `tags`."""
    created = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return get_version(name, int(created.version))


@store_call
def describe(name: str, model_description: str, version: int, version_description: str) -> None:
    """Set the Markdown descriptions (model cards) of registered model `name` and its `version`."""
    client = MlflowClient()
    client.update_registered_model(name, description=model_description)
    client.update_model_version(name, str(version), description=version_description)


@store_call
def get_version(name: str, version: int) -> VersionSummary:
    try:
        found = MlflowClient().get_model_version(name, str(version))
    except MlflowException:
        raise PatchUNetError(f"model {name} version {version} not found in {mlflow.get_registry_uri()}") from None
    return version_summary(found, registered_aliases(name))


@store_call
def list_versions(name: str) -> list[VersionSummary]:
    """Every version of registered model `name`, newest first; empty if it is not registered."""
    aliases = registered_aliases(name)
    versions = [version_summary(v, aliases) for v in MlflowClient().search_model_versions(f"name = '{name}'")]
    return sorted(versions, key=lambda v: v.version, reverse=True)


def registered_aliases(name: str) -> dict[str, int]:
    """{alias: version} of registered model `name`; empty if it is not registered.

    search_model_versions leaves ModelVersion.aliases empty, so aliases are read from the model.
    """
    try:
        model = MlflowClient().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: int(version) for alias, version in model.aliases.items()}


@store_call
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of metric `key` in run `run_id`, by step."""
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


@store_call
def experiment_runs(experiment: str) -> list[RunSummary]:
    """Every run of experiment `experiment`, newest first; empty if there is no such experiment."""
    found = MlflowClient().get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = MlflowClient().search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return [run_summary(r) for r in runs]


def download_artifact(run_id: str, artifact_path: str, destination: Path) -> Path | None:
    """Copy artifact `artifact_path` of run `run_id` into `destination`; None if the run has none there."""
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(destination)
        )
    except (MlflowException, OSError):
        return None
    return Path(local)


@store_call
def set_version_tags(name: str, version: int, tags: Mapping[str, Any]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def version_by_alias(name: str, alias: str) -> VersionSummary | None:
    """The version of `name` that holds `alias`, or None (also when the model is not registered)."""
    try:
        found = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return version_summary(found, registered_aliases(name))


@store_call
def set_alias(name: str, alias: str, version: int) -> None:
    """Point `alias` at `version`, taking it from whichever version held it."""
    MlflowClient().set_registered_model_alias(name, alias, str(version))
