"""What `tracking` hands back: the project's own small records, never MLflow's entities.

Callers ask for a run or a version and read plain fields; how MLflow spells and nests them
stays inside `tracking`, so an MLflow upgrade changes one package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from patchunet.tracking import names


@dataclasses.dataclass(frozen=True)
class ActiveRun:
    """The run a `tracking.run` block logs to."""

    run_id: str


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """A run: its params, the last value of each metric, and its tags, all as MLflow keeps them."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get(names.PARENT_RUN)


@dataclasses.dataclass(frozen=True)
class VersionSummary:
    """A registered model version: its run, its aliases, and the tags `register` gave it."""

    name: str
    version: int
    run_id: str
    created_ms: int
    aliases: tuple[str, ...]
    tags: Mapping[str, str]

    @property
    def scores(self) -> dict[str, float]:
        """Test scores from the `test_<score>` tags ({} for a version that was never evaluated)."""
        found = {}
        for key, value in self.tags.items():
            if key.startswith(names.SCORE_TAG_PREFIX):
                try:
                    found[key.removeprefix(names.SCORE_TAG_PREFIX)] = float(value)
                except ValueError:  # a hand-set tag: no score
                    continue
        return found

    @property
    def eval_protocol(self) -> str | None:
        """The hash of the eval params its scores came from, if it was evaluated."""
        return self.tags.get(names.EVAL_PROTOCOL_TAG)
