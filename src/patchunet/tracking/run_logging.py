"""What a `tracking.run` block logs to its run: params, metrics, tags and artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from patchunet.tracking.failures import failing_as


def active_run_subject() -> str:
    """The run the next log call writes to, as an error message names it."""
    active = mlflow.active_run()
    return f"run {active.info.run_id}" if active else "the active run"


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
    """Log `params`, nested sections flattened to dotted keys."""
    with failing_as(f"params of {active_run_subject()}"):
        mlflow.log_params(flatten(params))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    with failing_as(f"metrics of {active_run_subject()}"):
        mlflow.log_metrics(dict(metrics), step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    with failing_as(f"tags of {active_run_subject()}"):
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log a file, or every file of a folder, to the active run."""
    with failing_as(f"artifact {path.name} of {active_run_subject()}"):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
