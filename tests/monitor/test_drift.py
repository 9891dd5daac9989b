"""Drift: the regime-conditional PSI reference and monitor, ADWIN on the error stream, the
retrain trigger; on the bundled S&P 500 history where it matters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from daemon.config import RegimeConfig
from daemon.config.drift import DriftConfig
from daemon.errors import ConfigError, DataError
from daemon.monitor.drift import (
    DriftMonitor,
    DriftTrigger,
    ErrorStream,
    Reference,
    build_reference,
    psi,
)
from daemon.pipeline.features import FEATURE_NAMES, features_from_labels
from daemon.pipeline.regime import label_history

VOLATILITY = (
    *("vol_5", "vol_10", "vol_21", "vol_63", "parkinson_vol_21"),
    *("atr_14", "hl_range", "bb_width_20"),
)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclasses.dataclass(frozen=True)
class History:
    x: np.ndarray
    regimes: np.ndarray
    train: np.ndarray  # mask: 1999-2012, the champion's training period
    live: np.ndarray  # mask: 2013-2018


@pytest.fixture(scope="module")
def history(sp500: pd.DataFrame) -> History:
    """Feature rows and regimes of the bundled S&P 500. The VIX proxy is used throughout: the
    bundled VIX starts in 2014, and mixing proxy (training) with real VIX (live) rows would be
    a real change of the VIX features, not the one these tests are about."""
    labels = label_history(RegimeConfig(), sp500["close"], None)
    features = features_from_labels(sp500, labels)
    regimes = labels["regime"].reindex(features.index).to_numpy().astype(str)
    train = np.asarray(features.index < "2013-01-01")
    return History(features.to_numpy(np.float32), regimes, train, ~train)


@pytest.fixture(scope="module")
def reference(history: History) -> Reference:
    return build_reference(history.x[history.train], history.regimes[history.train], FEATURE_NAMES)


def shifted_volatility(x: np.ndarray, factor: float) -> np.ndarray:
    out = x.copy()
    out[:, [FEATURE_NAMES.index(name) for name in VOLATILITY]] *= factor
    return out


# --- the reference -------------------------------------------------------------------------


def test_reference_of_the_bundled_history_is_small(reference, history):
    doc = json.dumps(reference.as_dict())
    assert len(doc) < 50_000
    assert set(reference.regimes) == set(history.regimes[history.train])
    for regime in reference.regimes.values():
        assert len(regime.edges) == len(FEATURE_NAMES)
        for edges, counts in zip(regime.edges, regime.counts, strict=True):
            assert len(edges) <= 10  # 9 quantile cuts and the edge below the minimum
            assert sum(counts) == regime.rows


def test_regimes_with_too_few_training_rows_get_no_reference():
    x = np.zeros((30, 2), dtype=np.float32)
    ref = build_reference(x, ["normal"] * 20 + ["crash"] * 10, ["a", "b"], min_rows=15)
    assert set(ref.regimes) == {"normal"}


matrices = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 60), st.integers(1, 4)),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=60, deadline=None)
@given(x=matrices, seed=st.integers(0, 2**16))
@example(x=np.array([[np.finfo(np.float32).min]], dtype=np.float32), seed=0)
def test_reference_round_trips_through_json(x, seed):
    rng = np.random.default_rng(seed)
    regimes = rng.choice(["crash", "normal"], size=x.shape[0])
    names = [f"f{j}" for j in range(x.shape[1])]
    ref = build_reference(x, regimes, names, bins=5, min_rows=1)
    again = Reference.from_dict(json.loads(json.dumps(ref.as_dict(), allow_nan=False)))
    assert again == ref
    config = DriftConfig(min_live_rows=10, live_window=10)
    checks = []
    for r in (ref, again):
        monitor = DriftMonitor(r, config)
        monitor.observe(x, regimes)
        checks.append(monitor.check())
    assert checks[0] == checks[1]
    for regime in ref.regimes.values():
        for edges, counts in zip(regime.edges, regime.counts, strict=True):
            assert list(edges) == sorted(set(edges))
            assert len(counts) == len(edges) + 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(format=2), "drift reference.format = 2: expected 1"),
        (lambda d: d.update(features=[]), "drift reference.features"),
        (lambda d: d.update(bins=1), "drift reference.bins = 1"),
        (
            lambda d: d["regimes"]["normal"]["counts"][1].append(0),
            "drift reference.regimes.normal.counts[1]: expected 6 counts",
        ),
        (
            lambda d: d["regimes"]["normal"]["edges"][0].reverse(),
            "drift reference.regimes.normal.edges[0]: expected strictly ascending",
        ),
        (
            lambda d: d["regimes"]["normal"].update(rows=7),
            "drift reference.regimes.normal.counts[0]: sum 40 differs from rows = 7",
        ),
    ],
)
def test_a_damaged_reference_is_refused_with_the_key(damage, message):
    x = np.arange(80, dtype=np.float32).reshape(40, 2)
    doc = build_reference(x, ["normal"] * 40, ["a", "b"], bins=4, min_rows=1).as_dict()
    damage(doc)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Reference.from_dict(doc)


def test_values_outside_training_and_nan_have_bins_of_their_own():
    x = np.ones((200, 1), dtype=np.float32)  # a one-hot column that is always 1 in training
    ref = build_reference(x, ["crash"] * 200, ["regime_crash"], min_rows=1)
    config = DriftConfig(min_live_rows=100, live_window=200)
    for live, moved in ((1.0, False), (0.0, True), (2.0, True), (math.nan, True)):
        monitor = DriftMonitor(ref, config)
        monitor.observe(np.full((150, 1), live, dtype=np.float32), ["crash"] * 150)
        check = monitor.check()
        assert (check.feature_psi["regime_crash"] > 5) is moved, live


def test_psi_is_zero_for_equal_histograms_and_finite_for_empty_bins():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0)
    assert 0 < psi([10, 0, 0], [0, 0, 10]) < 20
    with pytest.raises(ValueError, match="do not match"):
        psi([1, 2], [1, 2, 3])


# --- the monitor ----------------------------------------------------------------------------


def test_monitor_keeps_the_newest_rows_per_regime_and_says_what_it_skipped():
    x = np.arange(200, dtype=np.float32).reshape(200, 1)
    ref = build_reference(np.vstack([x, x]), ["normal"] * 200 + ["recovery"] * 200, ["a"])
    monitor = DriftMonitor(ref, DriftConfig(live_window=50, min_live_rows=20))
    monitor.observe(np.arange(120, dtype=np.float32).reshape(-1, 1), ["normal"] * 120)
    monitor.observe(np.full((5, 1), 7, dtype=np.float32), ["recovery"] * 5)
    monitor.observe(np.full((30, 1), 7, dtype=np.float32), ["crash"] * 30)
    assert monitor.rows() == {"crash": 30, "normal": 50, "recovery": 5}
    check = monitor.check()
    assert check.skipped == {"crash": "no_reference", "recovery": "too_few_rows"}
    assert set(check.by_regime) == {"normal"}
    # the window holds rows 70..119 of 0..199: the upper half of training is missing
    assert check.score == pytest.approx(check.by_regime["normal"]) and check.score > 0.5
    assert check.ready and check.top(1)[0][0] == "a"


def test_monitor_without_a_reference_is_not_ready():
    monitor = DriftMonitor(None, DriftConfig())
    monitor.observe(np.zeros((300, 3)), ["normal"] * 300)
    check = monitor.check()
    assert not check.ready and check.score == 0 and check.feature_psi == {}
    assert check.skipped == {"normal": "no_reference"}


def test_monitor_refuses_rows_that_do_not_fit(reference):
    monitor = DriftMonitor(reference, DriftConfig())
    with pytest.raises(DataError, match="feature rows have 3 columns, expected 47"):
        monitor.observe(np.zeros((2, 3)), ["normal", "normal"])
    with pytest.raises(DataError, match="1 regime labels for 2 feature rows"):
        monitor.observe(np.zeros((2, 47)), ["normal"])


# --- on the real history --------------------------------------------------------------------


def test_later_years_of_the_same_regimes_stay_below_the_threshold(history, reference):
    config = DriftConfig()
    monitor = DriftMonitor(reference, config)
    monitor.observe(history.x[history.live], history.regimes[history.live])
    check = monitor.check()
    assert {"low_volatility", "normal", "high_volatility"} <= set(check.by_regime)
    assert check.score < config.threshold


def test_a_within_regime_shift_fires_once_per_cooldown(history, reference):
    config = DriftConfig()
    monitor = DriftMonitor(reference, config)
    monitor.observe(shifted_volatility(history.x[history.live], 2.0), history.regimes[history.live])
    check = monitor.check()
    assert check.score > config.threshold
    assert {name for name, _ in check.top(4)} <= set(VOLATILITY)

    clock = Clock()
    trigger = DriftTrigger(config, clock)
    fired_at = []
    for hour in range(60):  # a check every hour for 2.5 days, the drift persisting
        clock.now = T0 + dt.timedelta(hours=hour)
        if trigger.update(monitor.check().score):
            fired_at.append(hour)
    assert fired_at == [2, 26, 50]  # after `sustain` checks, then once per 24 h cooldown
    assert trigger.fired == 3 and trigger.last_reason == "feature_drift"
    assert trigger.suppressed_cooldown == 60 - 2 - 3


def test_a_regime_change_without_a_within_regime_shift_does_not_fire(history):
    """A live window of nothing but crash rows, drawn from the training period's crash rows
    (held out from the reference): the market entered a crash, but crashes look like the
    crashes the model was trained on."""
    rng = np.random.default_rng(7)
    crash = np.flatnonzero(history.train & (history.regimes == "crash"))
    held_out = rng.choice(crash, size=crash.size // 2, replace=False)
    train = history.train.copy()
    train[held_out] = False
    config = DriftConfig(min_live_rows=50)
    live_x = history.x[held_out]

    monitor = DriftMonitor(
        build_reference(history.x[train], history.regimes[train], FEATURE_NAMES), config
    )
    monitor.observe(live_x, history.regimes[held_out])
    check = monitor.check()
    assert set(check.by_regime) == {"crash"}  # checked, not skipped
    assert check.score < config.threshold / 2
    trigger = DriftTrigger(config, Clock())
    assert not any(trigger.update(monitor.check().score) for _ in range(10))

    # the same rows against the pooled, regime-unconditional reference look like heavy drift
    pooled = build_reference(history.x[train], ["all"] * int(train.sum()), FEATURE_NAMES)
    unconditional = DriftMonitor(pooled, config)
    unconditional.observe(live_x, ["all"] * live_x.shape[0])
    assert unconditional.check().score > 2 * config.threshold


# --- concept drift --------------------------------------------------------------------------


def errors(rng: np.random.Generator, rates_and_sizes: list[tuple[float, int]]) -> list[bool]:
    return [bool(e) for rate, n in rates_and_sizes for e in rng.random(n) < rate]


def test_adwin_detects_a_rise_of_the_error_rate():
    stream = ErrorStream()
    assert math.isnan(stream.error_rate) and not stream.take_alarm()
    rises = stream.update(errors(np.random.default_rng(1), [(0.45, 1000), (0.7, 1000)]))
    assert rises >= 1 and stream.rises == rises
    assert stream.take_alarm() and not stream.take_alarm()
    assert stream.error_rate == pytest.approx(0.7, abs=0.08)
    assert stream.seen == 2000


def test_adwin_stays_mostly_quiet_on_a_stationary_stream_and_ignores_a_fall():
    alarms = 0
    for seed in range(20):
        stream = ErrorStream()
        stream.update(errors(np.random.default_rng(seed), [(0.45, 2000)]))
        alarms += stream.take_alarm()
    assert alarms <= 2
    falling = ErrorStream()
    falling.update(errors(np.random.default_rng(3), [(0.7, 1000), (0.45, 1000)]))
    assert falling.detections >= 1 and falling.rises == 0 and not falling.take_alarm()


# --- the trigger ----------------------------------------------------------------------------


def test_trigger_debounces_and_a_low_or_unknown_score_breaks_the_run():
    trigger = DriftTrigger(DriftConfig(threshold=0.5, sustain=3), Clock())
    scores = [0.9, 0.9, 0.1, 0.9, 0.9, math.nan, 0.9, 0.9, 0.9]
    assert [trigger.update(s) for s in scores] == [False] * 8 + [True]
    assert trigger.checks == 9 and trigger.streak == 3


def test_concept_drift_fires_at_once_unless_switched_off():
    assert DriftTrigger(DriftConfig(), Clock()).update(0.0, concept_drift=True)
    trigger = DriftTrigger(DriftConfig(), Clock())
    trigger.update(0.0, concept_drift=True)
    assert trigger.last_reason == "concept_drift"
    off = DriftTrigger(DriftConfig(concept_drift_triggers=False), Clock())
    assert not off.update(0.0, concept_drift=True)


def test_a_disabled_trigger_counts_checks_but_never_fires():
    trigger = DriftTrigger(DriftConfig(enabled=False, sustain=1), Clock())
    assert not any(trigger.update(5.0, concept_drift=True) for _ in range(5))
    assert trigger.checks == 5 and trigger.fired == 0


def test_a_trigger_while_busy_is_counted_and_keeps_the_cooldown():
    clock = Clock()
    trigger = DriftTrigger(DriftConfig(sustain=1, cooldown_hours=24), clock)
    assert trigger.update(1.0)
    trigger.note_busy()
    clock.now = T0 + dt.timedelta(hours=1)
    assert not trigger.update(1.0)
    assert (trigger.fired, trigger.skipped_busy, trigger.suppressed_cooldown) == (1, 1, 1)
    assert trigger.next_allowed == T0 + dt.timedelta(hours=24)


def test_the_cooldown_can_be_seeded_and_the_run_reset():
    clock = Clock()
    trigger = DriftTrigger(DriftConfig(sustain=2), clock, last_fired=T0 - dt.timedelta(hours=23))
    assert not trigger.update(1.0) and not trigger.update(1.0)
    clock.now = T0 + dt.timedelta(hours=1)
    trigger.reset()
    assert not trigger.update(1.0)  # a new champion: the run starts again
    assert trigger.update(1.0)


def test_config_refuses_a_minimum_above_the_window():
    with pytest.raises(ConfigError, match=r"drift.min_live_rows = 600: expected at most drift"):
        DriftConfig(min_live_rows=600)
