"""The registered model's aliases (`champion`, `challenger`): which version holds one, and moving it."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from patchunet.tracking.failures import failing_as
from patchunet.tracking.records import VersionSummary
from patchunet.tracking.versions import get_version, registered_aliases


def version_by_alias(name: str, alias: str) -> VersionSummary | None:
    """The version of `name` that holds `alias`. None, a normal answer, when no version holds it
    (no champion yet) or `name` is not registered; TrackingError when the registry cannot be read."""
    held = registered_aliases(name).get(alias)
    return None if held is None else get_version(name, held)


def set_alias(name: str, alias: str, version: int) -> None:
    """Point `alias` at `version`, taking it from whichever version held it."""
    with failing_as(f"alias {alias} of model {name} version {version}"):
        MlflowClient().set_registered_model_alias(name, alias, str(version))
