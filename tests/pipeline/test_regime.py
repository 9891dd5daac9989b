from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import RegimeConfig
from daemon.pipeline.regime import RegimeLabeler, label_history, proxy_vix, vix_band

START = dt.date(2020, 1, 1)


def business_days(n: int, start: dt.date = START) -> pd.DatetimeIndex:
    return pd.bdate_range(start, periods=n, name="date")


def per_event(rules, close: pd.Series, vix: pd.Series | None) -> pd.DataFrame:
    """Run the per-event path the way the consumer does: VIX bars are fed before the day's bar."""
    labeler = RegimeLabeler(rules)
    vix_by_day = {} if vix is None else {d.date(): v for d, v in vix.dropna().items()}
    pending_vix = sorted(vix_by_day)
    rows = []
    j = 0
    for day, c in close.items():
        while j < len(pending_vix) and pending_vix[j] <= day.date():
            labeler.add_vix(pending_vix[j], vix_by_day[pending_vix[j]])
            j += 1
        lab = labeler.label("SPY", day.date(), float(c))
        rows.append((lab.regime, lab.vix, lab.vix_source))
    return pd.DataFrame(
        {
            "regime": pd.Series([r[0] for r in rows], dtype=object, index=close.index),
            "vix": [np.nan if r[1] is None else r[1] for r in rows],
            "vix_source": [r[2] for r in rows],
        },
        index=close.index,
    )


def both(rules, closes, vix=None) -> pd.DataFrame:
    """Label with both paths, assert they agree, return the batch labels."""
    close = (
        closes
        if isinstance(closes, pd.Series)
        else pd.Series(closes, index=business_days(len(closes)), dtype=float)
    )
    if vix is not None and not isinstance(vix, pd.Series):
        vix = pd.Series(vix, index=close.index[: len(vix)], dtype=float)
    batch = label_history(rules, close, vix)
    event = per_event(rules, close, vix)
    assert list(batch["regime"]) == list(event["regime"])
    assert all(r is None or isinstance(r, str) for r in batch["regime"])
    assert list(batch["vix_source"]) == list(event["vix_source"])
    b = batch["vix"].to_numpy(dtype=float)
    e = event["vix"].to_numpy(dtype=float)
    assert np.allclose(b, e, rtol=1e-12, atol=1e-9, equal_nan=True)
    return batch


@pytest.mark.parametrize(
    ("vix", "regime"),
    [
        (45, "crash"),
        (28, "high_volatility"),
        (18, "normal"),
        (12, "low_volatility"),
        (35, "high_volatility"),
        (35.0001, "crash"),
        (25, "high_volatility"),
        (24.9999, "normal"),
        (15, "normal"),
        (14.9999, "low_volatility"),
    ],
)
def test_vix_bands_and_their_boundaries(rules, vix, regime):
    assert vix_band(rules, vix) == regime
    labels = both(rules, [100.0] * 3, [vix] * 3)
    assert list(labels["regime"]) == [regime] * 3
    assert set(labels["vix_source"]) == {"vix"}


def test_thresholds_come_from_configuration():
    rules = RegimeConfig(vix_crash=50.0, vix_high=30.0, vix_normal=20.0)
    assert [vix_band(rules, v) for v in (45, 28, 18, 51)] == [
        "high_volatility",
        "normal",
        "low_volatility",
        "crash",
    ]


def test_price_override_beats_a_calm_vix(rules):
    closes = [100.0] * 12 + [85.0]
    labels = both(rules, closes, [12.0] * len(closes))
    assert labels["regime"].iloc[-1] == "crash"
    assert set(labels["regime"].iloc[:-1]) == {"low_volatility"}


def test_price_override_needs_the_full_fifteen_percent(rules):
    closes = [100.0] * 12 + [85.01]
    assert both(rules, closes, [12.0] * 13)["regime"].iloc[-1] == "low_volatility"


def test_price_override_looks_back_only_ten_bars(rules):
    # The 100 high is 11 bars back by the last bar: out of the window.
    closes = [100.0] + [95.0] * 10 + [84.0]
    labels = both(rules, closes, [12.0] * 12)
    assert labels["regime"].iloc[-1] == "low_volatility"
    closes = [100.0] + [95.0] * 9 + [84.0]
    assert both(rules, closes, [12.0] * 11)["regime"].iloc[-1] == "crash"


def march_2020(rebound_day_close: float) -> tuple[list[float], list[float]]:
    """Calm, a VIX crash with falling prices, then a rebound while VIX stays above 35."""
    closes = [100.0] * 5 + [95.0, 92.0, 90.0, 88.0] + [rebound_day_close]
    vix = [14.0] * 5 + [40.0, 50.0, 60.0, 70.0] + [55.0]
    return closes, vix


def test_recovery_beats_a_vix_above_35(rules):
    closes, vix = march_2020(88.0 * 1.10)
    labels = both(rules, closes, vix)
    assert list(labels["regime"].iloc[5:9]) == ["crash"] * 4
    assert labels["regime"].iloc[-1] == "recovery"


def test_a_rebound_short_of_ten_percent_is_still_a_vix_crash(rules):
    closes, vix = march_2020(88.0 * 1.099)
    assert both(rules, closes, vix)["regime"].iloc[-1] == "crash"


def test_recovery_compares_with_the_lowest_close_since_the_episode_began(rules):
    # Episode starts at 95 (crash by VIX); prices dip to 80 on a non-crash day, then rebound.
    closes = [100.0] * 5 + [95.0, 80.0, 87.0, 88.5]
    vix = [14.0] * 5 + [40.0, 30.0, 30.0, 30.0]
    labels = both(rules, closes, vix)
    assert list(labels["regime"].iloc[5:]) == [
        "crash",
        "crash",  # 80 <= 0.85 * 100: the price override
        "high_volatility",  # 87 < 1.10 * 80
        "recovery",  # 88.5 >= 88
    ]


def recovery_series(gap: int) -> tuple[list[float], list[float]]:
    """A single VIX crash bar at 90, then `gap` calm bars, the last one 10% above that low."""
    closes = [100.0] * 5 + [90.0] + [91.0] * (gap - 1) + [99.1]
    vix = [20.0] * 5 + [40.0] + [20.0] * gap
    return closes, vix


def test_recovery_lasts_exactly_the_window(rules):
    closes, vix = recovery_series(63)
    labels = both(rules, closes, vix)
    assert labels["regime"].iloc[5] == "crash"
    assert labels["regime"].iloc[-1] == "recovery"
    closes, vix = recovery_series(64)
    labels = both(rules, closes, vix)
    assert labels["regime"].iloc[-1] == "normal"


def test_recovery_window_is_configuration():
    rules = RegimeConfig(recovery_window_bars=10)
    closes, vix = recovery_series(11)
    assert both(rules, closes, vix)["regime"].iloc[-1] == "normal"
    closes, vix = recovery_series(10)
    assert both(rules, closes, vix)["regime"].iloc[-1] == "recovery"


def test_a_later_crash_inside_the_window_extends_the_episode(rules):
    # VIX crash at bar 5 (close 90), a second one 40 bars later at 92: the window restarts from
    # it, and recovery still compares with the low of the episode's first bar (90).
    closes = [100.0] * 5 + [90.0] + [91.0] * 39 + [92.0] + [93.0] * 62 + [99.1]
    vix = [20.0] * 5 + [40.0] + [20.0] * 39 + [40.0] + [20.0] * 63
    labels = both(rules, closes, vix)
    assert labels["regime"].iloc[45] == "crash"
    assert labels["regime"].iloc[-1] == "recovery"  # 63 bars after the second crash, >= 99
    assert labels["regime"].iloc[-2] == "normal"  # 93 < 99


def test_a_crash_after_the_window_starts_a_new_episode(rules):
    # Episode 1: crash at 90, low 86 the next day. Episode 2, 70 bars later: crash at 92.
    # Its low is 92, so 95 is no recovery (it would be against 86) and 101.3 is.
    closes = [100.0] * 5 + [90.0, 86.0] + [95.0] * 70 + [92.0] + [95.0] * 3 + [101.3]
    vix = [20.0] * 5 + [40.0, 20.0] + [20.0] * 70 + [40.0] + [20.0] * 4
    labels = both(rules, closes, vix)
    assert labels["regime"].iloc[77] == "crash"
    assert labels["regime"].iloc[-2] == "normal"
    assert labels["regime"].iloc[-1] == "recovery"


def test_proxy_when_vix_is_missing(rules):
    rng = np.random.default_rng(7)
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40))))
    labels = both(rules, closes, None)
    assert list(labels["vix_source"].iloc[:21]) == ["none"] * 21
    assert list(labels["regime"].iloc[:21]) == [None] * 21
    assert set(labels["vix_source"].iloc[21:]) == {"proxy"}
    returns = np.diff(np.log(closes))[-21:]
    expected = 100 * math.sqrt(252) * np.std(returns, ddof=1) * 1.2
    assert labels["vix"].iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert proxy_vix(rules, list(returns)) == pytest.approx(expected, rel=1e-12)


def test_stale_vix_falls_back_to_the_proxy(rules):
    days = business_days(30)
    close = pd.Series(100 * np.exp(np.linspace(0, 0.3, 30)), index=days)
    vix = pd.Series([12.0], index=[days[0]])
    labels = both(rules, close, vix)
    ages = [(d - days[0]).days for d in days]
    for age, source in zip(ages, labels["vix_source"], strict=True):
        if age <= 5:
            assert source == "vix"
        else:
            assert source in ("proxy", "none")
    assert labels["vix_source"].iloc[-1] == "proxy"


def test_staleness_limit_is_configuration():
    rules = RegimeConfig(vix_max_staleness_days=0)
    days = business_days(3)
    close = pd.Series([100.0, 100.0, 100.0], index=days)
    vix = pd.Series([12.0, 12.0], index=[days[0], days[2]])
    assert list(both(rules, close, vix)["vix_source"]) == ["vix", "none", "vix"]


def test_symbols_keep_separate_state(rules):
    labeler = RegimeLabeler(rules)
    for i in range(12):
        day = START + dt.timedelta(days=i)
        labeler.add_vix(day, 12.0)
        labeler.label("AAA", day, 100.0)
        labeler.label("BBB", day, 50.0)
    day = START + dt.timedelta(days=12)
    labeler.add_vix(day, 12.0)
    assert labeler.label("AAA", day, 80.0).regime == "crash"
    assert labeler.label("BBB", day, 50.0).regime == "low_volatility"


# --- the real bundled history -------------------------------------------------------------


@pytest.fixture(scope="module")
def sp500_labels(sp500, vix):
    return label_history(RegimeConfig(), sp500["close"], vix)


def test_per_event_and_batch_agree_on_the_whole_bundled_history(sp500, nasdaq, vix):
    rules = RegimeConfig()
    for bars in (sp500, nasdaq):
        labels = both(rules, bars["close"], vix)
        assert len(labels) == 5031
    both(rules, sp500["close"], None)  # proxy only, every day


def test_2017_is_mostly_low_volatility(sp500_labels):
    year = sp500_labels.loc["2017"]
    share = (year["regime"] == "low_volatility").mean()
    assert share > 0.9
    assert set(year["vix_source"]) == {"vix"}


def test_volmageddon_2018_02_05_is_a_crash_on_the_real_vix(sp500_labels):
    day = sp500_labels.loc["2018-02-05"]
    assert day["regime"] == "crash"
    assert day["vix"] == pytest.approx(37.32)
    assert day["vix_source"] == "vix"


def test_october_2008_is_mostly_crash_on_the_vix_proxy(sp500_labels):
    month = sp500_labels.loc["2008-10"]
    assert (month["regime"] == "crash").mean() > 0.5
    assert set(month["vix_source"]) == {"proxy"}
    assert month["vix"].min() > 35


def test_real_vix_is_used_from_2014_and_the_proxy_before(sp500_labels):
    assert set(sp500_labels.loc["2013"]["vix_source"]) == {"proxy"}
    assert set(sp500_labels.loc["2014-01-03":"2018"]["vix_source"]) == {"vix"}


# --- property: the two paths agree on anything ---------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.floats(min_value=-0.25, max_value=0.25, allow_nan=False), min_size=1, max_size=150
    ),
    vix_levels=st.lists(
        st.one_of(st.none(), st.floats(min_value=5, max_value=90)), min_size=0, max_size=150
    ),
    window=st.integers(min_value=1, max_value=30),
    proxy_window=st.integers(min_value=2, max_value=25),
)
def test_both_paths_agree_on_random_paths(steps, vix_levels, window, proxy_window):
    rules = dataclasses.replace(
        RegimeConfig(), recovery_window_bars=window, vix_proxy_window_bars=proxy_window
    )
    closes = list(100 * np.exp(np.cumsum(steps)))
    days = business_days(len(closes))
    close = pd.Series(closes, index=days)
    known = [(d, v) for d, v in zip(days, vix_levels, strict=False) if v is not None]
    vix = pd.Series([v for _, v in known], index=pd.DatetimeIndex([d for d, _ in known]))
    both(rules, close, vix if known else None)


@pytest.mark.parametrize("split", [1, 30, 2400, 2450, 2470, 2500, 2600, 5030])
def test_restored_state_labels_the_rest_like_the_uninterrupted_stream(sp500, split):
    """Restart at any bar (2008-2009 has long crash episodes): the state rebuilt from the
    stored closes and regimes labels every later bar as if nothing had happened."""
    rules = RegimeConfig()
    close = sp500["close"]
    full = label_history(rules, close, None)
    labeler = RegimeLabeler(rules)
    labeler.restore("X", list(close.iloc[:split]), list(full["regime"].iloc[:split]))
    later = [
        labeler.label("X", day.date(), float(c)).regime for day, c in close.iloc[split:].items()
    ]
    assert later == list(full["regime"].iloc[split:])
