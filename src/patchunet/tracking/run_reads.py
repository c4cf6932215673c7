"""Reading runs back: a run, an experiment's runs, a metric's history and an artifact, as the
project's records."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from patchunet.tracking.failures import failing_as
from patchunet.tracking.records import RunSummary


def get_run(run_id: str) -> RunSummary:
    """The run `run_id` of the current store; TrackingError if the store does not hold it."""
    with failing_as(f"run {run_id}"):
        return run_summary(MlflowClient().get_run(run_id))


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


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of metric `key` in run `run_id`, by step."""
    with failing_as(f"metric {key} of run {run_id}"):
        return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def experiment_runs(experiment: str) -> list[RunSummary]:
    """Every run of experiment `experiment`, newest first; empty if there is no such experiment."""
    client = MlflowClient()
    with failing_as(f"runs of experiment {experiment}"):
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return [run_summary(r) for r in runs]


def download_artifact(run_id: str, artifact_path: str, destination: Path) -> Path | None:
    """Copy artifact `artifact_path` of run `run_id` into `destination`. None, a normal answer, when
    the run has no artifact there (yet: evaluation may log it later); TrackingError when the run or
    its artifact store cannot be read."""
    import mlflow.artifacts

    subject = f"artifact {artifact_path} of run {run_id}"
    folder = str(PurePosixPath(artifact_path).parent)
    with failing_as(subject):
        listed = MlflowClient().list_artifacts(run_id, None if folder == "." else folder)
        if artifact_path not in {entry.path for entry in listed}:
            return None
        destination.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(destination)
        )
    return Path(local)
