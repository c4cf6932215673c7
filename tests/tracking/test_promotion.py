from pathlib import Path

import pytest
from conftest import mlflow_client

from patchunet import tracking
from patchunet.tracking.promotion import decide_promotion


def test_the_first_version_becomes_champion() -> None:
    decision = decide_promotion(1, 0.55, None, None)
    assert decision.promote and "no champion" in decision.reason


def test_champion_moves_only_on_a_strictly_better_aji() -> None:
    assert decide_promotion(3, 0.60, 2, 0.58).promote
    assert "beats champion v2's 0.5800" in decide_promotion(3, 0.60, 2, 0.58).reason
    assert not decide_promotion(3, 0.58, 2, 0.58).promote
    assert "does not beat" in decide_promotion(3, 0.50, 2, 0.58).reason


def test_a_champion_without_a_test_aji_is_replaced_and_a_champion_is_not_promoted_twice() -> None:
    assert decide_promotion(2, 0.4, 1, None).promote
    assert not decide_promotion(2, 0.4, 2, 0.4).promote


def test_versions_evaluated_differently_are_not_compared_and_ties_are_judged_at_four_decimals() -> None:
    decision = decide_promotion(3, 0.9, 2, 0.5, same_protocol=False)
    assert not decision.promote and "other eval params" in decision.reason
    assert not decide_promotion(3, 0.56604, 2, 0.566).promote  # 0.5660 does not beat 0.5660


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A function that registers a new version of "m" with a test AJI and an eval protocol."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)
    with tracking.run("exp") as active:
        pass
    client = mlflow_client(uri)
    client.create_registered_model("m")

    def register(aji: float, protocol: str = "p1") -> tracking.VersionSummary:
        tags = {"test_aji": str(aji), "eval_params": protocol}
        made = client.create_model_version("m", f"runs:/{active.run_id}/model", run_id=active.run_id, tags=tags)
        return tracking.get_version("m", int(made.version))

    return register


def holder(alias: str) -> int:
    return tracking.version_by_alias("m", alias).version


def test_promote_makes_every_candidate_challenger_and_moves_champion_on_a_better_aji(registry) -> None:
    first = tracking.promote(registry(0.50))
    assert first.promotion.promote and (first.version, first.champion) == (1, 1)
    assert holder("champion") == holder("challenger") == 1
    worse = tracking.promote(registry(0.45))
    assert not worse.promotion.promote and worse.champion == 1
    assert (holder("champion"), holder("challenger")) == (1, 2)
    assert "does not beat champion v1's 0.5000" in tracking.get_version("m", 2).tags["promotion"]
    better = tracking.promote(registry(0.55))
    assert better.promotion.promote and holder("champion") == holder("challenger") == 3
    assert "beats champion v1's 0.5000" in tracking.get_version("m", 3).tags["promotion"]


def test_promote_compares_only_versions_evaluated_under_the_same_protocol(registry) -> None:
    tracking.promote(registry(0.50, protocol="p1"))
    other = tracking.promote(registry(0.90, protocol="p2"))
    assert not other.promotion.promote and holder("champion") == 1
    assert "other eval params" in other.promotion.reason
