"""Tracking: everything the project keeps in MLflow; it and `serving` are the only packages that import `mlflow`.

- `names`: every metric, tag, param, alias and artifact name, spelled once;
- `records`: what reads hand back (RunSummary, VersionSummary), never MLflow's entities;
- `failures`: the one error policy: an MLflow failure is one TrackingError line naming what failed;
- `store`: which store (the tracking URI) and connecting to it;
- `runs`: a run's life: starting, reopening, ending, failing an abandoned one;
- `run_logging`: params, metrics, tags and artifacts of the active run;
- `run_reads`: runs, metric histories and artifacts read back;
- `logged_models`: logging the network as a model, and reading a model's weights and config back;
- `versions`: registering a run's model, its versions, their tags and model cards;
- `aliases`: which version holds `champion` or `challenger`, and moving them;
- `evaluation`: the test metrics and version tags of an evaluation;
- `promotion`: when a registered version becomes `champion`;
- `provenance`: the git commit and DVC data hash a run is tagged with;
- `served_model`: the raw network as training logs it (images -> logits; imported by MLflow only).

`from patchunet import tracking` gives the whole public API below.
"""

from patchunet.tracking import names
from patchunet.tracking.aliases import set_alias, version_by_alias
from patchunet.tracking.evaluation import log_evaluation, score_tags
from patchunet.tracking.logged_models import load_logged_model, log_model, model_config
from patchunet.tracking.promotion import Promotion, Registration, decide_promotion, promote
from patchunet.tracking.provenance import dvc_output_hash, git_commit
from patchunet.tracking.records import ActiveRun, RunSummary, VersionSummary
from patchunet.tracking.run_logging import flatten, log_artifact, log_metrics, log_params, set_tags
from patchunet.tracking.run_reads import download_artifact, experiment_runs, get_run, metric_history
from patchunet.tracking.runs import ensure_experiment, fail_abandoned_run, recorded_as_running, run
from patchunet.tracking.store import DEFAULT_TRACKING_URI, connect, resolve_tracking_uri, sqlite_file
from patchunet.tracking.versions import (
    describe,
    get_version,
    list_versions,
    register_model,
    register_run_model,
    registered_aliases,
    set_version_tags,
)

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
    "model_config",
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
