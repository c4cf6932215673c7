"""The registry's versions: registering a run's model, reading versions back, their tags and model cards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from patchunet.tracking.failures import failing_as, found_or_none
from patchunet.tracking.records import VersionSummary


def registered_aliases(name: str) -> dict[str, int]:
    """{alias: version} of registered model `name`; empty, a normal answer, if it is not registered.

    search_model_versions leaves ModelVersion.aliases empty, so aliases are read from the model.
    """
    model = found_or_none(f"model {name}", lambda: MlflowClient().get_registered_model(name))
    return {} if model is None else {alias: int(version) for alias, version in model.aliases.items()}


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


def get_version(name: str, version: int) -> VersionSummary:
    """Version `version` of registered model `name`; TrackingError if the registry does not hold it."""
    with failing_as(f"model {name} version {version}"):
        found = MlflowClient().get_model_version(name, str(version))
    return version_summary(found, registered_aliases(name))


def list_versions(name: str) -> list[VersionSummary]:
    """Every version of registered model `name`, newest first; empty if it is not registered."""
    aliases = registered_aliases(name)
    with failing_as(f"versions of model {name}"):
        found = MlflowClient().search_model_versions(f"name = '{name}'")
    return sorted((version_summary(v, aliases) for v in found), key=lambda v: v.version, reverse=True)


def register_model(model_uri: str, name: str, tags: Mapping[str, Any]) -> VersionSummary:
    """Register `model_uri` as a new version of `name`, tagged with `tags`."""
    with failing_as(f"a new version of model {name} from {model_uri}"):
        created = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return get_version(name, int(created.version))


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


def set_version_tags(name: str, version: int, tags: Mapping[str, Any]) -> None:
    client = MlflowClient()
    with failing_as(f"tags of model {name} version {version}"):
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, str(value))


def describe(name: str, model_description: str, version: int, version_description: str) -> None:
    """Set the Markdown descriptions (model cards) of registered model `name` and its `version`."""
    client = MlflowClient()
    with failing_as(f"descriptions of model {name} version {version}"):
        client.update_registered_model(name, description=model_description)
        client.update_model_version(name, str(version), description=version_description)
