from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from daemon.config.training import GateConfig
from daemon.training.gate import Evidence, Predictor, decide, gather
from daemon.training.report import Comparison

GATE = GateConfig()


def evidence(
    edge: tuple[float, float, float] = (0.03, 0.01, 0.05),
    champion: tuple[float, float, float] | None = None,
    **regimes: tuple[float, float, float],
) -> Evidence:
    """Evidence from (difference, low, high) triples."""

    def comparison(against: str, t: tuple[float, float, float], n: int = 2000) -> Comparison:
        return Comparison(against, t[0], (t[1], t[2]), n)

    return Evidence(
        "balanced_accuracy",
        0.55,
        comparison("always up", edge),
        None if champion is None else comparison("the champion", champion),
        {r: comparison("the champion", t, 300) for r, t in regimes.items()},
    )


# -- the rules on given evidence ---------------------------------------------------------------


def test_without_a_champion_skill_shown_is_promoted():
    decision = decide(evidence(), GATE)
    assert (decision.promoted, decision.rule) == (True, "no_champion")
    assert decision.reason == (
        "no champion yet; skill shown: balanced accuracy +0.030 [+0.010, +0.050] over always up"
    )
    assert decision.interval is None


def test_no_skill_shown_says_so_in_words():
    decision = decide(evidence((0.024, -0.011, 0.058)), GATE)
    assert (decision.promoted, decision.rule) == (False, "naive_edge")
    assert decision.reason == (
        "no skill shown: balanced accuracy +0.024 [-0.011, +0.058] over always up "
        "(the lower bound must be above min_edge 0)"
    )


def test_the_lower_bound_must_clear_min_edge_even_with_a_champion():
    gate = dataclasses.replace(GATE, min_edge=0.02)
    decision = decide(evidence((0.04, 0.015, 0.06), champion=(0.01, 0.0, 0.02)), gate)
    assert (decision.promoted, decision.rule) == (False, "naive_edge")
    assert decide(evidence((0.04, 0.025, 0.06), champion=(0.01, 0.0, 0.02)), gate).promoted


def test_a_lower_bound_at_min_edge_is_not_above_it():
    assert decide(evidence((0.02, 0.0, 0.04)), GATE).rule == "naive_edge"


def test_against_a_champion_the_paired_interval_decides():
    rejected = decide(evidence(champion=(0.01, -0.02, 0.04)), GATE)
    assert (rejected.promoted, rejected.rule) == (False, "overall")
    assert rejected.reason.startswith(
        "not shown as good as the champion: balanced accuracy +0.010 [-0.020, +0.040] over the "
        "champion (the lower bound must be at least -tolerance -0.005)"
    )
    assert rejected.interval == (-0.02, 0.04)
    passed = decide(evidence(champion=(0.01, -0.005, 0.03)), GATE)
    assert (passed.promoted, passed.rule) == (True, "passed")
    assert "+0.010 [-0.005, +0.030] over the champion" in passed.reason


def test_a_regime_vetoes_only_when_its_interval_shows_a_drop():
    noisy = decide(evidence(champion=(0.01, 0.0, 0.02), crash=(-0.08, -0.2, 0.04)), GATE)
    assert noisy.promoted
    assert "crash compared" in noisy.reason
    shown = decide(evidence(champion=(0.01, 0.0, 0.02), crash=(-0.08, -0.15, -0.01)), GATE)
    assert (shown.promoted, shown.rule) == (False, "regime_drop")
    assert shown.reason.startswith(
        "crash shown worse than under the champion: balanced accuracy -0.080 [-0.150, -0.010] "
        "over the champion on 300 rows"
    )


def test_crash_and_recovery_are_checked_first():
    decision = decide(
        evidence(
            champion=(0.01, 0.0, 0.02),
            normal=(-0.05, -0.08, -0.02),
            recovery=(-0.06, -0.09, -0.03),
        ),
        GATE,
    )
    assert decision.rule == "regime_drop"
    assert decision.reason.startswith("recovery")


def test_max_regime_drop_is_a_floor_under_a_shown_drop():
    gate = dataclasses.replace(GATE, max_regime_drop=0.03)
    small = evidence(champion=(0.01, 0.0, 0.02), normal=(-0.02, -0.03, -0.01))
    assert decide(small, gate).promoted
    assert decide(small, GATE).rule == "regime_drop"


def test_no_score_and_unchanged_come_first():
    assert decide(Evidence("balanced_accuracy", None, None), GATE).rule == "no_score"
    same = dataclasses.replace(evidence((0.0, -0.01, 0.01), (0.0, 0.0, 0.0)), unchanged=True)
    decision = decide(same, GATE)
    assert (decision.promoted, decision.rule) == (False, "unchanged")
    assert "no version added" in decision.reason


# -- the evidence from predictions -------------------------------------------------------------


def _data(n_days: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = np.repeat(np.arange(n_days), 2).astype("datetime64[D]")
    y = (rng.random(len(days)) < 0.57).astype(np.int8)
    regimes = np.where(np.arange(len(days)) % 5 == 0, "crash", "normal")
    return y, days, regimes


def _predictor(y: np.ndarray, accuracy: float, seed: int) -> Predictor:
    """Calls right with probability `accuracy`, probabilities that lean to the call."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(y)) < accuracy
    pred = np.where(right, y, 1 - y).astype(np.int8)
    return Predictor(pred, np.where(pred == 1, 0.6, 0.4) + rng.normal(0, 0.05, len(y)))


def _references(y: np.ndarray) -> dict[str, Predictor]:
    n = len(y)
    rate = np.full(n, 0.57)
    return {
        "always_up": Predictor(np.ones(n, dtype=np.int8), rate),
        "training_majority": Predictor(np.ones(n, dtype=np.int8), rate),
    }


def _gather(y, days, regimes, candidate, champion=None, gate=GATE, seed=1):
    return gather(
        y, days, regimes, candidate, champion, _references(y), gate, min_n=50, seed=seed
    )


def test_gather_is_reproducible_under_the_seed_and_reports_every_figure():
    y, days, regimes = _data()
    candidate = _predictor(y, 0.6, seed=3)
    first, figures = _gather(y, days, regimes, candidate)
    again, _ = _gather(y, days, regimes, candidate)
    other, _ = _gather(y, days, regimes, candidate, seed=2)
    assert first == again
    assert first.edge is not None and other.edge is not None
    assert first.edge.interval != other.edge.interval
    assert set(figures) == {"candidate", "always_up", "training_majority"}
    for figure in figures["candidate"].values():
        assert figure.value is not None and figure.interval is not None
        low, high = figure.interval
        assert low <= figure.value <= high
    assert figures["always_up"]["auc"].value == 0.5
    assert figures["always_up"]["balanced_accuracy"].value == 0.5


def test_noise_candidates_are_rarely_promoted_and_skill_is():
    y, days, regimes = _data()
    gate = dataclasses.replace(GATE, bootstrap_samples=300)
    promoted = 0
    for seed in range(20):
        noise = _predictor(y, 0.5, seed=100 + seed)
        promoted += decide(_gather(y, days, regimes, noise, gate=gate)[0], gate).promoted
    assert promoted <= 3  # about 2.5% expected; 3 of 20 is beyond the 99.9th percentile
    skilled = _predictor(y, 0.58, seed=7)
    assert decide(_gather(y, days, regimes, skilled, gate=gate)[0], gate).promoted


def test_a_champion_predicting_the_same_is_unchanged_and_regimes_need_enough_rows():
    y, days, regimes = _data()
    candidate = _predictor(y, 0.6, seed=3)
    found, _ = _gather(y, days, regimes, candidate, champion=candidate)
    assert found.unchanged
    assert decide(found, GATE).rule == "unchanged"
    champion = _predictor(y, 0.6, seed=4)
    found, figures = _gather(y, days, regimes, candidate, champion=champion)
    assert not found.unchanged
    assert "champion" in figures
    # 240 crash rows and 960 normal ones: both compared at the default 200 rows
    assert set(found.regimes) == {"crash", "normal"}
    assert found.regimes["crash"].n == 240
    few, _ = _gather(
        y, days, regimes, candidate, champion, dataclasses.replace(GATE, min_regime_rows=241)
    )
    assert set(few.regimes) == {"normal"}


def test_gather_needs_a_scored_reference():
    y, days, regimes = _data(20)
    candidate = _predictor(y, 0.6, seed=3)
    with pytest.raises(ValueError, match="no naive reference"):
        gather(y, days, regimes, candidate, None, {}, GATE, min_n=5, seed=0)


def test_unchanged_allows_only_the_last_bits_of_a_reloaded_model_to_move():
    y, days, regimes = _data()
    candidate = _predictor(y, 0.6, seed=3)
    reloaded = Predictor(candidate.pred.copy(), candidate.proba + 1e-9)
    assert _gather(y, days, regimes, candidate, champion=reloaded)[0].unchanged
    moved = Predictor(candidate.pred.copy(), candidate.proba + 1e-4)
    assert not _gather(y, days, regimes, candidate, champion=moved)[0].unchanged
    # without a champion, the last registered candidate stands in
    found, _ = gather(
        y, days, regimes, candidate, None, _references(y), GATE, min_n=50, seed=1,
        previous=("those of the last candidate V1", reloaded),
    )  # fmt: skip
    decision = decide(found, GATE)
    assert decision.rule == "unchanged"
    assert "equal those of the last candidate V1; no version added" in decision.reason
