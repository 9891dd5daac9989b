from __future__ import annotations

import dataclasses

import pytest

from daemon.config.training import GateConfig
from daemon.domain import REGIMES
from daemon.training.gate import GateDecision, decide
from daemon.training.scoring import Score, Scores

N = {"low_volatility": 900, "normal": 1500, "high_volatility": 400, "crash": 250, "recovery": 220}


def scores(overall: float | None, **per_regime: float | None) -> Scores:
    """Balanced accuracy (and accuracy, 0.05 higher) per regime; regimes not named get 0.55,
    a regime named with None is below the minimum."""
    regimes = {}
    for r in REGIMES:
        value = per_regime.get(r, 0.55)
        regimes[r] = Score(N[r], None if value is None else value + 0.05, value)
    total = sum(N.values())
    return Scores(regimes, Score(total, None if overall is None else overall + 0.05, overall))


BASELINES = {
    "always_up": scores(0.5),
    "training_majority": scores(0.5),
    "previous_return": scores(0.52),
}
GATE = GateConfig()


def test_without_a_champion_a_candidate_beating_the_naive_references_is_promoted():
    decision = decide(scores(0.56), None, BASELINES, GATE, None)
    assert decision == GateDecision(True, "no_champion", decision.reason, None)
    assert "previous_return 0.520" in decision.reason


def test_without_a_champion_only_the_naive_edge_rule_applies():
    decision = decide(scores(0.51, crash=0.2), None, BASELINES, GATE, None)
    assert not decision.promoted
    assert decision.rule == "naive_edge"
    assert decision.reason == (
        "overall balanced accuracy 0.510 vs best naive reference previous_return 0.520: "
        "edge -0.010 < min_edge 0"
    )


def test_naive_edge_uses_min_edge_even_against_a_champion():
    gate = dataclasses.replace(GATE, min_edge=0.05)
    decision = decide(scores(0.56), scores(0.55), BASELINES, gate, None)
    assert (decision.promoted, decision.rule) == (False, "naive_edge")
    assert "edge +0.040 < min_edge 0.05" in decision.reason


def test_overall_below_champion_minus_tolerance_is_rejected():
    decision = decide(scores(0.55), scores(0.56), BASELINES, GATE, (-0.03, 0.01))
    assert (decision.promoted, decision.rule) == (False, "overall")
    assert decision.reason == (
        "overall balanced accuracy 0.550 vs champion 0.560: below the champion minus "
        "tolerance 0.005 (0.555) (candidate - champion 95% interval [-0.030, +0.010])"
    )
    assert decision.interval == (-0.03, 0.01)


def test_overall_within_tolerance_passes():
    decision = decide(scores(0.555), scores(0.56), BASELINES, GATE, None)
    assert (decision.promoted, decision.rule) == (True, "passed")


def test_a_regime_dropping_too_far_is_rejected():
    champion = scores(0.56, high_volatility=0.60)
    decision = decide(scores(0.57, high_volatility=0.56), champion, BASELINES, GATE, None)
    assert (decision.promoted, decision.rule) == (False, "regime_drop")
    assert decision.reason == (
        "high_volatility balanced accuracy 0.560 vs champion 0.600: drops 0.040 > "
        "max_regime_drop 0.03"
    )


def test_crash_and_recovery_are_checked_before_the_other_regimes():
    champion = scores(0.56, normal=0.60, crash=0.601, recovery=0.60)
    candidate = scores(0.57, normal=0.50, crash=0.512, recovery=0.50)
    decision = decide(candidate, champion, BASELINES, GATE, None)
    assert decision.reason == (
        "crash balanced accuracy 0.512 vs champion 0.601: drops 0.089 > max_regime_drop 0.03"
    )
    candidate = scores(0.57, normal=0.50, recovery=0.50)
    decision = decide(candidate, scores(0.56, normal=0.6, recovery=0.6), BASELINES, GATE, None)
    assert decision.reason.startswith("recovery ")


def test_regimes_with_a_null_score_are_not_compared():
    champion = scores(0.56, crash=None, recovery=None)
    candidate = scores(0.57, crash=None, recovery=None)
    assert decide(candidate, champion, BASELINES, GATE, None).rule == "passed"


def test_a_drop_at_the_limit_passes():
    champion = scores(0.56, crash=0.60)
    decision = decide(scores(0.56, crash=0.57), champion, BASELINES, GATE, None)
    assert (decision.promoted, decision.rule) == (True, "passed")


def test_a_candidate_passing_every_rule_is_promoted_with_the_figures():
    decision = decide(scores(0.58), scores(0.56), BASELINES, GATE, (0.004, 0.036))
    assert (decision.promoted, decision.rule) == (True, "passed")
    assert decision.reason == (
        "overall balanced accuracy 0.580 vs champion 0.560; no regime drops more than 0.03; "
        "beats best naive reference previous_return 0.520 by +0.060 >= min_edge 0 "
        "(candidate - champion 95% interval [+0.004, +0.036])"
    )
    assert decision.as_dict() == {
        "promoted": True,
        "rule": "passed",
        "reason": decision.reason,
        "interval": [0.004, 0.036],
    }


def test_the_gate_metric_chooses_the_figure_compared():
    gate = dataclasses.replace(GATE, metric="accuracy")
    decision = decide(scores(0.55), scores(0.56), BASELINES, gate, None)
    assert decision.reason.startswith("overall accuracy 0.600 vs champion 0.610")


def test_a_candidate_without_an_overall_score_is_not_promoted():
    decision = decide(scores(None), None, BASELINES, GATE, None)
    assert (decision.promoted, decision.rule) == (False, "no_score")
    assert "no overall balanced accuracy" in decision.reason


def test_candidate_and_champion_must_share_the_validation_sets():
    champion = scores(0.56)
    champion = Scores({**champion.per_regime, "crash": Score(10, 0.5, 0.5)}, champion.overall)
    with pytest.raises(ValueError, match="crash has 250 rows for the candidate, 10"):
        decide(scores(0.57), champion, BASELINES, GATE, None)


def test_the_gate_needs_a_scored_naive_reference():
    with pytest.raises(ValueError, match="no naive reference"):
        decide(scores(0.57), None, {"always_up": scores(None)}, GATE, None)
