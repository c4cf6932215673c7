"""When a newly registered model version takes the `champion` alias, and moving it there.

Every new version becomes the `challenger`; it becomes `champion` only when its test AJI beats
the current champion's, or when there is no champion yet. The reason is written down so a
reviewer sees why the alias moved, or did not.
"""

from __future__ import annotations

import dataclasses

from patchunet.tracking import names
from patchunet.tracking.aliases import set_alias, version_by_alias
from patchunet.tracking.records import VersionSummary
from patchunet.tracking.versions import set_version_tags


@dataclasses.dataclass(frozen=True)
class Promotion:
    promote: bool
    reason: str


def decide_promotion(
    candidate_version: int,
    candidate_aji: float,
    champion_version: int | None,
    champion_aji: float | None,
    same_protocol: bool = True,
) -> Promotion:
    """Whether `candidate_version` should become champion, and why, in one sentence.

    Scores compare only when both versions were evaluated with the same `eval` params
    (`same_protocol`); AJIs are compared at the 4 decimals the registry tags keep.
    """
    if champion_version is None:
        return Promotion(True, f"no champion yet; v{candidate_version} has test AJI {candidate_aji:.4f}")
    if champion_version == candidate_version:
        return Promotion(False, f"v{candidate_version} is already the champion")
    if not same_protocol:
        return Promotion(
            False,
            f"champion v{champion_version} was evaluated with other eval params; re-evaluate it before comparing",
        )
    candidate_aji, champion_aji = round(candidate_aji, 4), None if champion_aji is None else round(champion_aji, 4)
    if champion_aji is None:
        return Promotion(
            True, f"champion v{champion_version} has no test AJI; v{candidate_version} has {candidate_aji:.4f}"
        )
    if candidate_aji > champion_aji:
        return Promotion(True, f"test AJI {candidate_aji:.4f} beats champion v{champion_version}'s {champion_aji:.4f}")
    return Promotion(
        False, f"test AJI {candidate_aji:.4f} does not beat champion v{champion_version}'s {champion_aji:.4f}"
    )


@dataclasses.dataclass(frozen=True)
class Registration:
    """What `promote` did: the candidate is challenger; champion is `champion` now."""

    version: int
    champion: int | None
    promotion: Promotion


def promote(candidate: VersionSummary) -> Registration:
    """Make `candidate` the challenger, and the champion if `decide_promotion` says so; the reason
    goes into its `promotion` tag."""
    name = candidate.name
    champion = version_by_alias(name, names.CHAMPION)
    champion_version = champion.version if champion else None
    decision = decide_promotion(
        candidate.version,
        candidate.scores["aji"],
        champion_version,
        champion.scores.get("aji") if champion else None,
        same_protocol=champion is None or champion.eval_protocol == candidate.eval_protocol,
    )
    set_alias(name, names.CHALLENGER, candidate.version)
    if decision.promote:
        set_alias(name, names.CHAMPION, candidate.version)
    set_version_tags(name, candidate.version, {names.PROMOTION_TAG: decision.reason})
    return Registration(candidate.version, candidate.version if decision.promote else champion_version, decision)
