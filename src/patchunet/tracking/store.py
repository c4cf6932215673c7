"""Which MLflow store the project uses, and connecting to it.

The URI is the MLFLOW_TRACKING_URI variable, else `mlflow.tracking_uri` in params.yaml, else the
embedded `sqlite:///mlflow.db` (the registry needs a database). Local stores keep their artifacts
under `mlartifacts/`; a tracking server keeps them where it was told to. A relative SQLite file and
`mlartifacts/` lie in the DVC repo's root (`store_root`), also for a queued DVC experiment, which
runs in a temporary copy of the repo.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from patchunet.core.errors import TrackingError, first_line
from patchunet.core.locking import exclusive_lock

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_DIR = Path("mlartifacts")
HEALTH_TIMEOUT_S = 5
DVC_ROOT_VARIABLE = "DVC_ROOT"
"""Set by DVC for every stage it runs: the root of the repo the user ran DVC in."""

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
"""MLflow's HTTP client retries a failing server for about 4 minutes by default; these bound it to
under 10 s (waits of 0, 2 and 4 s, plus up to 1 s each, between 4 tries), or 20 s per try for a server that
accepts and never answers. Set the variables to override them."""


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


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the working folder); None for any other URI."""
    prefix = "sqlite:///"
    return Path(uri.removeprefix(prefix)) if uri.startswith(prefix) else None


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def connect(uri: str) -> None:
    """Point MLflow at `uri`, failing at once, with one TrackingError line, if the store there cannot be used.

    MLflow's own client retries for minutes; a run must never train for an hour and then find
    that it cannot be logged. One cheap query checks the store's API (a server may answer /health
    and still fail every call) and creates a new SQLite store's tables, once, under a lock.
    """
    server = is_server(uri)
    if server:
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
        where = f"MLflow tracking server {uri} answers /health but not its API" if server else f"MLflow store {uri}"
        raise TrackingError(f"{where}: cannot be used ({first_line(exc)})") from None
    mlflow.set_tracking_uri(uri)


def check_health(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}): start it, or set MLFLOW_TRACKING_URI"
        ) from None
