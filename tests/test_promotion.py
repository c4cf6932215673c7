from patchunet.promotion import decide_promotion


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
