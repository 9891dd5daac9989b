from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import Config
from daemon.domain import REGIMES
from daemon.errors import SamplingError
from daemon.training.sampling import balance, quotas, row_weights, weight_report

MIX = Config().sampling.target_mix.as_dict()
WEIGHTS = Config().weights.regime.as_dict()


def skewed(n_low=3000, n_normal=4000, n_high=1500, n_crash=200, n_recovery=300):
    rows = (
        ["low_volatility"] * n_low
        + ["normal"] * n_normal
        + ["high_volatility"] * n_high
        + ["crash"] * n_crash
        + ["recovery"] * n_recovery
    )
    rng = np.random.default_rng(0)
    rng.shuffle(rows)
    return rows


def test_weight_shares_and_effective_size_at_the_target_mix():
    report = weight_report(MIX, WEIGHTS)
    assert round(100 * report.weight_share["crash"], 1) == 17.1
    assert round(100 * report.weight_share["recovery"], 1) == 12.8
    assert round(100 * report.weight_share["normal"], 1) == 34.2
    assert round(report.effective_size_ratio, 2) == 1.17
    assert sum(report.weight_share.values()) == pytest.approx(1.0)


def test_weight_report_of_actual_counts_after_balancing():
    mix = balance(skewed(), MIX, seed=1)
    report = weight_report(mix.counts_after, WEIGHTS)
    assert report.weight_share["crash"] == pytest.approx(0.171, abs=0.001)
    assert report.effective_size_ratio == pytest.approx(1.17, abs=0.001)


def test_row_weights_follow_the_regime():
    assert list(row_weights(["crash", "normal", "low_volatility"], WEIGHTS)) == [2.0, 1.0, 0.8]
    with pytest.raises(SamplingError, match="'panic' has no weight"):
        row_weights(["panic"], WEIGHTS)


@pytest.mark.parametrize("size", [None, 1000, 12345, 7])
def test_counts_hit_the_target_mix_within_one_row(size):
    rows = skewed()
    mix = balance(rows, MIX, seed=3, size=size)
    total = size or len(rows)
    assert len(mix.indices) == total
    for regime, share in MIX.items():
        assert abs(mix.counts_after.get(regime, 0) - share * total) <= 1, regime
    assert mix.counts_before == dict(Counter(rows))


def test_oversampling_keeps_every_minority_row_and_undersampling_drops_majority_rows():
    rows = skewed()
    mix = balance(rows, MIX, seed=3)
    picked = Counter(mix.indices.tolist())
    crash_rows = [i for i, r in enumerate(rows) if r == "crash"]
    assert all(picked[i] >= 1 for i in crash_rows)  # 200 rows -> 1000: every one kept
    normal_rows = [i for i, r in enumerate(rows) if r == "normal"]
    assert all(picked[i] <= 1 for i in normal_rows)  # 4000 -> 3600: no duplicates
    assert list(mix.indices) == sorted(mix.indices)


def test_deterministic_under_a_seed():
    rows = skewed()
    a = balance(rows, MIX, seed=11).indices
    b = balance(rows, MIX, seed=11).indices
    c = balance(rows, MIX, seed=12).indices
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_absent_regime_share_is_spread_in_proportion_with_a_warning(caplog):
    rows = skewed(n_recovery=0)
    with caplog.at_level(logging.WARNING, logger="daemon.training.sampling"):
        mix = balance(rows, MIX, seed=5, size=9000)
    assert mix.absent == ("recovery",)
    assert "regime recovery is absent" in caplog.text
    # 0.1 spread over 0.9 in proportion: each present share is divided by 0.9.
    for regime in ("low_volatility", "normal", "high_volatility", "crash"):
        assert abs(mix.counts_after[regime] - 9000 * MIX[regime] / 0.9) <= 1
    assert "recovery" not in mix.counts_after


def test_single_regime_input_is_returned_at_the_requested_size():
    mix = balance(["crash"] * 50, MIX, seed=1, size=80)
    assert mix.counts_after == {"crash": 80}
    assert set(mix.absent) == set(REGIMES) - {"crash"}
    assert len(set(mix.indices.tolist())) == 50


def test_unknown_regime_and_impossible_targets_are_errors():
    with pytest.raises(SamplingError, match="'panic' has no share"):
        balance(["panic"], MIX, seed=1)
    with pytest.raises(SamplingError, match="gives no share to any regime"):
        balance(["crash"], {**MIX, "crash": 0.0}, seed=1)


def test_quotas_sum_exactly():
    assert sum(quotas({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 100).values()) == 100


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=300), min_size=5, max_size=5),
    size=st.integers(min_value=0, max_value=3000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_input_meets_the_mix_of_the_regimes_present(counts, size, seed):
    rows = [r for r, c in zip(REGIMES, counts, strict=True) for _ in range(c)]
    if not rows:
        return
    mix = balance(rows, MIX, seed=seed, size=size)
    total = size or len(rows)
    assert len(mix.indices) == total
    present_share = sum(MIX[r] for r, c in zip(REGIMES, counts, strict=True) if c)
    for regime, c in zip(REGIMES, counts, strict=True):
        got = mix.counts_after.get(regime, 0)
        if c == 0:
            assert got == 0
        else:
            assert abs(got - total * MIX[regime] / present_share) <= 1
