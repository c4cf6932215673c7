"""Tracking: everything the project keeps in MLflow; it and `serving` are the only packages that import `mlflow`.

- `names`: every metric, tag, param, alias and artifact name, spelled once;
- `records`: what reads hand back (RunSummary, VersionSummary), never MLflow's entities;
- `client`: the store: connecting, runs, logging, logged models, the registry;
- `evaluation`: the test metrics and version tags of an evaluation;
- `promotion`: when a registered version becomes `champion`, and moving the aliases;
- `provenance`: the git commit and DVC data hash a run is tagged with;
- `served_model`: the raw network as training logs it (images -> logits; imported by MLflow only).

`from patchunet import tracking` gives the whole public API below.
"""

from patchunet.tracking import names
from patchunet.tracking.client import (
    DEFAULT_TRACKING_URI,
    connect,
    describe,
    download_artifact,
    ensure_experiment,
    experiment_runs,
    fail_abandoned_run,
    flatten,
    get_run,
    get_version,
    list_versions,
    load_logged_model,
    log_artifact,
    log_metrics,
    log_model,
    log_params,
    metric_history,
    recorded_as_running,
    register_model,
    register_run_model,
    registered_aliases,
    resolve_tracking_uri,
    run,
    set_alias,
    set_tags,
    set_version_tags,
    sqlite_file,
    version_by_alias,
)
from patchunet.tracking.evaluation import log_evaluation, score_tags
from patchunet.tracking.promotion import Promotion, Registration, decide_promotion, promote
from patchunet.tracking.provenance import dvc_output_hash, git_commit
from patchunet.tracking.records import ActiveRun, RunSummary, VersionSummary

__all__ = [
    "DEFAULT_TRACKING_URI",
    "ActiveRun",
    "Promotion",
    "Registration",
    "RunSummary",
    "VersionSummary",
    "connect",
    "decide_promotion",
    "describe",
    "download_artifact",
    "dvc_output_hash",
    "ensure_experiment",
    "experiment_runs",
    "fail_abandoned_run",
    "flatten",
    "get_run",
    "get_version",
    "git_commit",
    "list_versions",
    "load_logged_model",
    "log_artifact",
    "log_evaluation",
    "log_metrics",
    "log_model",
    "log_params",
    "metric_history",
    "names",
    "promote",
    "recorded_as_running",
    "register_model",
    "register_run_model",
    "registered_aliases",
    "resolve_tracking_uri",
    "run",
    "score_tags",
    "set_alias",
    "set_tags",
    "set_version_tags",
    "sqlite_file",
    "version_by_alias",
]
