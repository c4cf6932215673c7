"""A run's life: its experiment, starting or reopening it, ending it, and failing one that was abandoned.

A run started in a DVC experiment (`dvc exp run`) is named and tagged after it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from patchunet.core.files import write_json
from patchunet.tracking.failures import failing_as, found_or_none
from patchunet.tracking.names import DVC_BASELINE_REV, DVC_EXPERIMENT
from patchunet.tracking.records import ActiveRun
from patchunet.tracking.store import ARTIFACT_DIR, is_server, store_root

DVC_EXPERIMENT_VARIABLES = {"DVC_EXP_NAME": DVC_EXPERIMENT, "DVC_EXP_BASELINE_REV": DVC_BASELINE_REV}
"""Set by `dvc exp run` (queued or not) for every stage -> the run tag that keeps each."""


def ensure_experiment(name: str) -> str:
    """Id of experiment `name`, created with artifacts under mlartifacts/ for a local store."""
    client = MlflowClient()
    with failing_as(f"experiment {name}"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = None if is_server(mlflow.get_tracking_uri()) else (store_root() / ARTIFACT_DIR).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)


def dvc_experiment_tags() -> dict[str, str]:
    """The DVC experiment this process runs in, as run tags; empty outside `dvc exp run`."""
    return {tag: os.environ[variable] for variable, tag in DVC_EXPERIMENT_VARIABLES.items() if os.environ.get(variable)}


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
    with failing_as(f"run {run_id}" if run_id else f"a new run of experiment {experiment}"):
        started = mlflow.start_run(
            run_id=run_id,
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=parent_run_id,
            tags={k: str(v) for k, v in (tags or {}).items()} or None,
        )
    status = "FAILED"
    try:
        yield ActiveRun(started.info.run_id)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end_run(started.info.run_id, status)


def end_run(run_id: str, status: str) -> None:
    """End run `run_id` with `status` if it is still the active run (the block may have ended it)."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with failing_as(f"run {run_id}"):
            mlflow.end_run(status=status)


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
    has it RUNNING; returns its id. None, a normal answer, when there is nothing to end: no record,
    a process still alive, a run that ended or that this store does not hold. The record of a
    process that is gone is removed."""
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
    found = found_or_none(f"run {run_id}", lambda: client.get_run(run_id))  # None: another store's, or deleted
    if found is None or found.info.status != "RUNNING":
        return None
    with failing_as(f"run {run_id}"):
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
