from __future__ import annotations

import math
from collections import deque
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import RegimeConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import REGIMES
from daemon.errors import DataError
from daemon.pipeline.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    SymbolFeatures,
    compute_features,
    features_from_labels,
    restore_features,
    warmup_bars,
)
from daemon.pipeline.regime import label_history
from tests.factories import assert_same_rows

COLUMNS = ("open", "high", "low", "close", "volume")
TOL = 1e-9


@cache
def bundled(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A bundled history and its regime labels (VIX from 2014, the proxy before)."""
    bars = read_bars_csv(bundled_path(name))
    labels = label_history(RegimeConfig(), bars["close"], read_vix_csv(bundled_path("vix")))
    return bars, labels


def inputs(labels: pd.DataFrame) -> tuple[list[float], list[bool], list[str | None]]:
    """The per-bar VIX, proxy flag and regime as plain lists (None for an undecided regime)."""
    return (
        labels["vix"].tolist(),
        (labels["vix_source"] == "proxy").tolist(),
        [r if isinstance(r, str) else None for r in labels["regime"]],
    )


def per_event(bars, vix, proxy, regimes) -> tuple[pd.DataFrame, int]:
    """Feed the bars one by one, as the consumer does; return the rows and the withheld count."""
    state = SymbolFeatures()
    frame = feed(state, bars, vix, proxy, regimes)
    return frame, state.withheld


def feed(state: SymbolFeatures, bars, vix, proxy, regimes) -> pd.DataFrame:
    """Feed the bars one by one to `state`; return the rows it emits, indexed by day."""
    rows, days = [], []
    values = zip(*(bars[c].tolist() for c in COLUMNS), vix, proxy, regimes, strict=True)
    for day, (o, h, low, c, v, x, p, r) in zip(bars.index, values, strict=True):
        row = state.update(o, h, low, c, v, x, p, r)
        if row is not None:
            rows.append(row)
            days.append(day)
    return pd.DataFrame(rows, index=pd.Index(days), columns=list(FEATURE_NAMES), dtype=float)


def assert_agree(batch: pd.DataFrame, event: pd.DataFrame) -> None:
    assert_same_rows(batch, event, "batch vs per-event", TOL)


def synthetic(closes, volume=1_000_000.0, spread=0.01) -> pd.DataFrame:
    """Bars around a close path: open at the previous close, high/low `spread` outside."""
    c = np.asarray(closes, dtype=float)
    o = np.concatenate([c[:1], c[:-1]])
    vol = np.broadcast_to(np.asarray(volume, dtype=float), c.shape)
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) * (1 + spread),
            "low": np.minimum(o, c) * (1 - spread),
            "close": c,
            "volume": vol,
        },
        index=pd.bdate_range("2000-01-03", periods=len(c), name="date"),
    )


def last_row(bars, vix=20.0, regime="normal", proxy=False) -> dict[str, float]:
    """Features of the last bar, with the same VIX and regime on every bar (both paths)."""
    n = len(bars)
    vixes = np.broadcast_to(np.asarray(vix, dtype=float), (n,)).tolist()
    batch = compute_features(bars, vixes, [proxy] * n, [regime] * n)
    event, _ = per_event(bars, vixes, [proxy] * n, [regime] * n)
    assert_agree(batch, event)
    return dict(zip(FEATURE_NAMES, batch.iloc[-1].tolist(), strict=True))


# --- the contract -------------------------------------------------------------------------


def test_there_are_at_least_40_uniquely_named_features_and_a_version():
    assert len(FEATURE_NAMES) >= 40
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert isinstance(FEATURE_VERSION, int)
    assert [n for n in FEATURE_NAMES if n.startswith("regime_")] == [f"regime_{r}" for r in REGIMES]


def test_every_feature_is_in_the_documentation_table():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    assert f"one row of {len(FEATURE_NAMES)} numbers" in doc
    assert f"`FEATURE_VERSION = {FEATURE_VERSION}`" in doc
    for name in FEATURE_NAMES:
        assert f"| `{name}` |" in doc, name


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_per_event_and_batch_agree_on_the_whole_bundled_history(name):
    bars, labels = bundled(name)
    batch = features_from_labels(bars, labels)
    event, withheld = per_event(bars, *inputs(labels))
    assert_agree(batch, event)
    assert np.isfinite(batch.to_numpy()).all()
    # The first 21 bars have no regime, but they are inside the warm-up anyway.
    assert withheld == warmup_bars() == len(bars) - len(batch)
    assert batch.index[0] == bars.index[warmup_bars()]
    assert len(batch) == len(bars) - warmup_bars()


def test_the_per_event_row_is_a_fresh_writable_float64_array():
    bars = synthetic(100 * np.exp(np.cumsum(np.full(warmup_bars() + 2, 0.001))))
    state = SymbolFeatures()
    rows = [state.update(*row, 20.0, False, "normal") for row in bars.itertuples(index=False)]
    assert rows[: warmup_bars()] == [None] * warmup_bars()
    first, second = rows[-2], rows[-1]
    assert first is not None and second is not None
    assert first.dtype == np.float64 and first.shape == (len(FEATURE_NAMES),)
    assert first.flags.writeable and not np.shares_memory(first, second)
    assert state.bars == len(bars) and state.withheld == warmup_bars()


def test_a_clean_history_withholds_exactly_the_warm_up():
    n = warmup_bars() + 30
    bars = synthetic(100 + np.sin(np.arange(n)))
    batch = compute_features(bars, [20.0] * n, [False] * n, ["normal"] * n)
    event, withheld = per_event(bars, [20.0] * n, [False] * n, ["normal"] * n)
    assert_agree(batch, event)
    assert withheld == warmup_bars() == 199
    assert len(batch) == 30 and batch.index[0] == bars.index[warmup_bars()]


def test_a_missing_regime_or_vix_withholds_rows_and_counts_them():
    n = warmup_bars() + 60
    bars = synthetic(100 + np.sin(np.arange(n) / 3))
    vix = [20.0] * n
    regimes: list[str | None] = ["normal"] * n
    regimes[warmup_bars() + 5] = None
    vix[warmup_bars() + 30] = math.nan  # this bar and the next 19 lack a 20-bar VIX history
    batch = compute_features(bars, vix, [False] * n, regimes)
    event, withheld = per_event(bars, vix, [False] * n, regimes)
    assert_agree(batch, event)
    assert withheld == warmup_bars() + 1 + 20
    assert len(batch) == n - withheld
    missing = set(bars.index[warmup_bars() :]) - set(batch.index)
    expected = {bars.index[warmup_bars() + 5]} | set(
        bars.index[warmup_bars() + 30 : warmup_bars() + 50]
    )
    assert missing == expected


def test_features_are_scale_free():
    bars, labels = bundled("sp500")
    scaled = bars.copy()
    scaled[["open", "high", "low", "close"]] *= 37.25
    scaled["volume"] *= 1e-3
    base = features_from_labels(bars, labels)
    other = features_from_labels(scaled, labels)
    assert np.allclose(base.to_numpy(), other.to_numpy(), rtol=TOL, atol=TOL)


# --- definitions pinned by hand -------------------------------------------------------------


def test_one_bar_log_return_ma_distance_and_drawdown_by_hand():
    closes = [100.0] * 240 + [110.0]
    f = last_row(synthetic(closes))
    assert f["ret_1"] == pytest.approx(math.log(1.1), abs=1e-15)
    assert f["ret_60"] == pytest.approx(math.log(1.1), abs=1e-15)
    assert f["ma_dist_20"] == pytest.approx(110 / ((19 * 100 + 110) / 20) - 1, rel=1e-12)
    assert f["ma_dist_200"] == pytest.approx(110 / ((199 * 100 + 110) / 200) - 1, rel=1e-12)
    assert f["ma_20_50"] == pytest.approx(((19 * 100 + 110) / 20) / ((49 * 100 + 110) / 50) - 1)
    assert f["drawdown_10"] == 0.0
    assert f["rebound_10"] == pytest.approx(0.1, rel=1e-12)
    assert f["gap"] == pytest.approx(0.0, abs=1e-15)  # opens at the previous close
    assert f["body"] == pytest.approx(math.log(1.1), abs=1e-15)
    # Bollinger: mean 100.5, population stdev sqrt(19 * 0.5^2 + 9.5^2) / sqrt(20).
    sd = math.sqrt((19 * 0.25 + 9.5**2) / 20)
    assert f["bb_pctb_20"] == pytest.approx((110 - (100.5 - 2 * sd)) / (4 * sd), rel=1e-9)
    assert f["bb_width_20"] == pytest.approx(4 * sd / 100.5, rel=1e-9)


def test_rsi_is_100_rising_0_falling_and_50_flat():
    n = warmup_bars() + 5
    assert last_row(synthetic(np.linspace(50, 150, n)))["rsi_14"] == 100.0
    assert last_row(synthetic(np.linspace(150, 50, n)))["rsi_14"] == 0.0
    flat = last_row(synthetic([80.0] * n))
    assert flat["rsi_14"] == 50.0  # no gains and no losses: defined as neutral


def test_flat_windows_have_defined_values_not_made_up_ones():
    n = warmup_bars() + 5
    f = last_row(synthetic([80.0] * n, volume=5_000.0))
    assert f["volume_z_20"] == 0.0  # zero stdev: the volume equals its mean, z-score 0
    assert f["bb_pctb_20"] == 0.5  # zero band width: the close is on the middle band
    assert f["bb_width_20"] == 0.0
    for name in ("vol_5", "vol_63", "skew_21", "skew_63", "macd", "macd_hist", "ret_60"):
        assert f[name] == 0.0, name
    assert f["stoch_k_14"] == pytest.approx(0.5)  # close midway in the 1% spread
    zero_volume = last_row(synthetic([80.0] * n, volume=0.0))
    assert zero_volume["volume_z_20"] == 0.0


def test_volume_z_score_and_close_location_by_hand():
    n = warmup_bars() + 1
    volume = np.full(n, 100.0)
    volume[-1] = 300.0  # window: 19 x 100 and 300, mean 110, population stdev sqrt(1900)
    bars = synthetic(np.full(n, 50.0), volume=volume)
    bars.loc[bars.index[-1], ["high", "low", "close"]] = [52.0, 48.0, 51.0]
    f = last_row(bars)
    assert f["volume_z_20"] == pytest.approx(190 / math.sqrt(1900), rel=1e-12)
    assert f["close_location"] == pytest.approx(0.75, rel=1e-12)
    assert f["hl_range"] == pytest.approx(math.log(52 / 48), rel=1e-12)
    assert f["upper_wick"] == pytest.approx(math.log(52 / 51), rel=1e-12)
    assert f["lower_wick"] == pytest.approx(math.log(50 / 48), rel=1e-12)  # open 50


def test_vix_features_and_regime_one_hot_by_hand():
    n = warmup_bars() + 1
    vix = np.full(n, 20.0)
    vix[-1], vix[-2], vix[-6] = 30.0, 24.0, 15.0
    f = last_row(synthetic(np.full(n, 10.0)), vix=vix, regime="crash", proxy=True)
    assert f["vix_level"] == 30.0
    assert f["vix_chg_1"] == pytest.approx(math.log(30 / 24), rel=1e-12)
    assert f["vix_chg_5"] == pytest.approx(math.log(30 / 15), rel=1e-12)
    mean = (30 + 24 + 15 + 17 * 20) / 20
    assert f["vix_rel_20"] == pytest.approx(30 / mean - 1, rel=1e-12)
    assert f["vix_minus_vol_21"] == pytest.approx(0.30, rel=1e-12)  # flat prices: no vol
    assert f["vix_is_proxy"] == 1.0
    assert [f[f"regime_{r}"] for r in REGIMES] == [float(r == "crash") for r in REGIMES]


def test_annualised_volatility_of_alternating_returns_by_hand():
    n = warmup_bars() + 1
    closes = np.where(np.arange(n) % 2 == 0, 100.0, 102.0)
    f = last_row(synthetic(closes))
    r = math.log(1.02)
    last5 = np.array([r, -r, r, -r, r] if closes[-1] == 102.0 else [-r, r, -r, r, -r])
    assert f["vol_5"] == pytest.approx(np.std(last5, ddof=1) * math.sqrt(252), rel=1e-9)
    assert f["vol_63"] == pytest.approx(
        np.std(np.diff(np.log(closes))[-63:], ddof=1) * math.sqrt(252), rel=1e-9
    )


# --- an independent, textbook implementation, row by row ----------------------------------


def ema_path(values, n: int, alpha: float) -> list[float]:
    """Seed with the mean of the first n values, then e += alpha * (x - e), one per value."""
    e = float(np.mean(values[:n]))
    path = [e]
    for x in values[n:]:
        e += alpha * (x - e)
        path.append(e)
    return path


def ema(values, n: int, alpha: float) -> float:
    return ema_path(values, n, alpha)[-1]


def textbook_row(bars: pd.DataFrame, labels: pd.DataFrame, j: int) -> dict[str, float]:
    """Every feature of bar j, written from the definitions in docs/features.md."""
    o, h, lo, c, v = (bars[col].to_numpy()[: j + 1] for col in COLUMNS)
    vix = labels["vix"].to_numpy()[: j + 1]
    r = np.diff(np.log(c))
    f = {f"ret_{k}": math.log(c[-1] / c[-1 - k]) for k in (1, 5, 10, 20, 60)}
    for w in (5, 10, 21, 63):
        f[f"vol_{w}"] = np.std(r[-w:], ddof=1) * math.sqrt(252)
    f["parkinson_vol_21"] = math.sqrt(252 * np.mean(np.log(h / lo)[-21:] ** 2) / (4 * math.log(2)))
    for w in (21, 63):
        d = r[-w:] - r[-w:].mean()
        f[f"skew_{w}"] = np.mean(d**3) / np.mean(d**2) ** 1.5
    gains, losses = np.maximum(np.diff(c), 0), np.maximum(-np.diff(c), 0)
    avg_gain, avg_loss = ema(gains, 14, 1 / 14), ema(losses, 14, 1 / 14)
    f["rsi_14"] = 100 - 100 / (1 + avg_gain / avg_loss)
    fast, slow = ema_path(c, 12, 2 / 13), ema_path(c, 26, 2 / 27)  # from bars 11 and 25 on
    line = [(fast[t - 11] - slow[t - 25]) / c[t] for t in range(25, j + 1)]
    f["macd"] = line[-1]
    f["macd_signal"] = ema(np.array(line), 9, 2 / 10)
    f["macd_hist"] = f["macd"] - f["macd_signal"]
    f["stoch_k_14"] = (c[-1] - lo[-14:].min()) / (h[-14:].max() - lo[-14:].min())
    mid, sd = c[-20:].mean(), c[-20:].std()
    lower, upper = mid - 2 * sd, mid + 2 * sd
    f["bb_pctb_20"] = (c[-1] - lower) / (upper - lower)
    f["bb_width_20"] = (upper - lower) / mid
    prev = c[:-1]
    tr = np.maximum.reduce([h[1:] - lo[1:], abs(h[1:] - prev), abs(lo[1:] - prev)])
    f["atr_14"] = ema(tr, 14, 1 / 14) / c[-1]
    f["hl_range"] = math.log(h[-1] / lo[-1])
    f["close_location"] = (c[-1] - lo[-1]) / (h[-1] - lo[-1])
    f["gap"] = math.log(o[-1] / c[-2])
    f["body"] = math.log(c[-1] / o[-1])
    f["upper_wick"] = math.log(h[-1] / max(o[-1], c[-1]))
    f["lower_wick"] = math.log(min(o[-1], c[-1]) / lo[-1])
    f["volume_z_20"] = (v[-1] - v[-20:].mean()) / v[-20:].std()
    for w in (10, 60):
        f[f"drawdown_{w}"] = c[-1] / c[-w:].max() - 1
        f[f"rebound_{w}"] = c[-1] / c[-w:].min() - 1
    ma = {w: c[-w:].mean() for w in (20, 50, 200)}
    for w in (20, 50, 200):
        f[f"ma_dist_{w}"] = c[-1] / ma[w] - 1
    f["ma_20_50"] = ma[20] / ma[50] - 1
    f["ma_50_200"] = ma[50] / ma[200] - 1
    f["vix_level"] = vix[-1]
    f["vix_chg_1"] = math.log(vix[-1] / vix[-2])
    f["vix_chg_5"] = math.log(vix[-1] / vix[-6])
    f["vix_rel_20"] = vix[-1] / vix[-20:].mean() - 1
    f["vix_minus_vol_21"] = vix[-1] / 100 - f["vol_21"]
    f["vix_is_proxy"] = float(labels["vix_source"].iloc[j] == "proxy")
    for regime in REGIMES:
        f[f"regime_{regime}"] = float(labels["regime"].iloc[j] == regime)
    return f


@pytest.mark.parametrize("day", ["1999-10-19", "2008-10-15", "2013-06-03", "2018-12-24"])
def test_every_feature_matches_a_textbook_implementation_on_real_bars(day):
    bars, labels = bundled("sp500")
    batch = features_from_labels(bars, labels)
    j = int(bars.index.get_indexer([pd.Timestamp(day)])[0])
    assert j >= 0, day
    expected = textbook_row(bars, labels, j)
    assert set(expected) == set(FEATURE_NAMES)
    got = batch.loc[pd.Timestamp(day)]
    for name in FEATURE_NAMES:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bar", "message"),
    [
        ((1.0, 1.0, 1.0, -2.0, 5.0), "close -2.0 is not a positive finite price"),
        ((1.0, math.inf, 1.0, 1.0, 5.0), "high inf is not a positive finite price"),
        ((1.0, 1.0, math.nan, 1.0, 5.0), "low nan is not a positive finite price"),
        ((1.0, 1.0, 1.0, 1.0, -5.0), "volume -5.0 is not a finite number >= 0"),
    ],
)
def test_per_event_rejects_a_bad_bar_naming_the_value_and_keeps_its_state(bar, message):
    state = SymbolFeatures()
    state.update(1.0, 1.1, 0.9, 1.0, 10.0, 20.0, False, "normal")
    with pytest.raises(DataError, match=f"bar 2 of this symbol: {message}"):
        state.update(*bar, 20.0, False, "normal")
    assert state.bars == 1 and state.withheld == 1


def test_per_event_rejects_a_bad_vix_or_regime_and_treats_nan_as_unknown():
    state = SymbolFeatures()
    with pytest.raises(DataError, match=r"bar 1 of this symbol: VIX -3.0 is not a positive"):
        state.update(1.0, 1.0, 1.0, 1.0, 1.0, -3.0, False, "normal")
    with pytest.raises(DataError, match=r"regime 'panic' is not one of low_volatility, normal"):
        state.update(1.0, 1.0, 1.0, 1.0, 1.0, 20.0, False, "panic")
    assert state.bars == 0
    assert state.update(1.0, 1.0, 1.0, 1.0, 1.0, math.nan, False, math.nan) is None  # type: ignore[arg-type]
    assert state.update(1.0, 1.0, 1.0, 1.0, 1.0, None, False, None) is None
    assert state.withheld == 2


def test_batch_rejects_bad_input_naming_the_column_or_day():
    bars = synthetic([10.0, 11.0, 12.0])
    ok = ([20.0] * 3, [False] * 3, ["normal"] * 3)
    with pytest.raises(DataError, match="missing column"):
        compute_features(bars.drop(columns="volume"), *ok)
    with pytest.raises(DataError, match="vix: 2 values for 3 bars"):
        compute_features(bars, [20.0] * 2, *ok[1:])
    with pytest.raises(DataError, match="regimes: 4 values for 3 bars"):
        compute_features(bars, *ok[:2], ["normal"] * 4)
    bad = bars.copy()
    bad.loc[bars.index[1], "low"] = 0.0
    with pytest.raises(DataError, match=r"bar 2000-01-04: low 0\.0 is not a positive finite price"):
        compute_features(bad, *ok)
    with pytest.raises(DataError, match=r"bar 2000-01-05: regime 'boom' is not one of"):
        compute_features(bars, *ok[:2], ["normal", None, "boom"])
    with pytest.raises(DataError, match=r"bar 2000-01-03: VIX 0\.0 is not a positive"):
        compute_features(bars, [0.0, 1.0, 1.0], *ok[1:])
    with pytest.raises(DataError, match="labels: index does not match"):
        features_from_labels(bars, pd.DataFrame({"vix": [], "vix_source": [], "regime": []}))


def test_a_short_history_gives_an_empty_frame_with_the_feature_columns():
    bars = synthetic([10.0, 11.0, 12.0])
    out = compute_features(bars, [20.0] * 3, [False] * 3, ["normal"] * 3)
    assert out.empty and list(out.columns) == list(FEATURE_NAMES)
    empty = compute_features(bars.iloc[:0], [], [], [])
    assert empty.empty and list(empty.columns) == list(FEATURE_NAMES)


# --- random bars ------------------------------------------------------------------------------


SHAPES = ("random", "flat", "trend", "alternate", "crash", "still")


def price_path(rng, n: int, segments, tick: float) -> tuple[np.ndarray, ...]:
    """Log moves (gap, body, up wick, down wick) per bar, segment by segment."""
    moves = np.zeros((n, 4))
    i = 0
    while i < n:
        for length, shape in segments:
            part = moves[i : i + length]
            m = len(part)
            if shape == "random":
                part[:, :2] = rng.normal(0, 0.01, (m, 2))
                part[:, 2:] = rng.exponential(0.005, (m, 2))
            elif shape == "flat":  # closes unchanged, bars still have a range
                part[:, 2:] = 0.003
            elif shape == "trend":
                part[:, 1] = 0.004
                part[:, 2:] = 0.002
            elif shape == "alternate":
                part[:, 1] = np.where(np.arange(m) % 2, 0.02, -0.02)
            elif shape == "crash":
                part[:, 1] = -0.06
                part[:, 2:] = 0.03
            # "still": open = high = low = close, no move at all
            i += m
            if i >= n:
                break
    if tick:
        moves = np.round(moves / tick) * tick
    return tuple(moves.T)


@st.composite
def random_history(draw):
    """Positive OHLCV bars built from random and degenerate stretches (flat, still, trend,
    alternating, crash), at price levels from cents to 10^5, with zero and constant volumes,
    gaps in the VIX and undecided regimes."""
    n = draw(st.integers(warmup_bars() - 5, warmup_bars() + 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    segments = draw(
        st.lists(st.tuples(st.integers(1, 90), st.sampled_from(SHAPES)), min_size=1, max_size=6)
    )
    tick = draw(st.sampled_from([0.0, 1e-4, 1e-2]))
    gap, body, up, down = price_path(rng, n, segments, tick)
    start = draw(st.sampled_from([0.05, 1.0, 37.5, 2500.0, 4e5]))
    close = start * np.exp(np.cumsum(gap + body))
    open_ = close * np.exp(-body)
    high = np.maximum(open_, close) * np.exp(up)
    low = np.minimum(open_, close) * np.exp(-down)
    volume_kind = draw(st.sampled_from(["random", "constant", "zero", "integers", "huge"]))
    volume = {
        "random": rng.lognormal(14, 1, n),
        "constant": np.full(n, 123_456.7),
        "zero": np.zeros(n),
        "integers": rng.integers(0, 3, n).astype(float),
        "huge": rng.lognormal(22, 0.5, n),
    }[volume_kind]
    vix = draw(st.sampled_from(["random", "constant"]))
    vix = rng.uniform(9, 80, n) if vix == "random" else np.full(n, 16.5)
    vix[sorted(draw(st.sets(st.integers(0, n - 1), max_size=3)))] = np.nan
    regimes: list[str | None] = [str(r) for r in rng.choice(REGIMES, n)]
    for i in draw(st.sets(st.integers(0, n - 1), max_size=3)):
        regimes[i] = None
    proxy = (rng.random(n) < 0.5).tolist()
    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=pd.bdate_range("2001-01-01", periods=n, name="date"),
    )
    return bars, vix.tolist(), proxy, regimes


@settings(max_examples=80, deadline=None)
@given(random_history())
def test_per_event_and_batch_agree_on_random_bars(history):
    bars, vix, proxy, regimes = history
    batch = compute_features(bars, vix, proxy, regimes)
    event, withheld = per_event(bars, vix, proxy, regimes)
    assert_agree(batch, event)
    assert withheld == len(bars) - len(batch) >= min(len(bars), warmup_bars())
    assert np.isfinite(batch.to_numpy()).all()


# --- restore: the per-event state rebuilt from stored bars -----------------------------------


def state_of(features: SymbolFeatures) -> dict[str, object]:
    """A copy of every slot of a `SymbolFeatures` (deques as lists), to compare states exactly."""
    slots = {name: getattr(features, name) for name in SymbolFeatures.__slots__}
    return {name: list(v) if isinstance(v, deque | list) else v for name, v in slots.items()}


def check_restore(bars, vix, proxy, regimes, splits) -> None:
    """Restore from the first k bars, then feed the rest with `update`, for every k in splits:
    the restored state is the per-event state after k bars (bit for bit, counters included),
    and the rows that follow are the uninterrupted stream's and the batch path's."""
    n = len(bars)
    batch = compute_features(bars, vix, proxy, regimes)
    reference = SymbolFeatures()
    parts, snapshots, done = [], {}, 0
    for k in sorted(splits):
        parts.append(
            feed(reference, bars.iloc[done:k], vix[done:k], proxy[done:k], regimes[done:k])
        )
        snapshots[k], done = state_of(reference), k
    parts.append(feed(reference, bars.iloc[done:], vix[done:], proxy[done:], regimes[done:]))
    event = pd.concat(parts)
    assert_agree(batch, event)
    for k in splits:
        state = SymbolFeatures.restore(bars.iloc[:k], vix[:k], proxy[:k], regimes[:k])
        assert state.bars == k
        assert state.withheld == k - int(
            np.count_nonzero(batch.index < bars.index[k]) if k < n else len(batch)
        )
        assert state_of(state) == snapshots[k], f"restored after {k} bars"
        rest = feed(state, bars.iloc[k:], vix[k:], proxy[k:], regimes[k:])
        after = bars.index[k:]
        assert_agree(batch[batch.index.isin(after)], rest)
        assert_agree(event[event.index.isin(after)], rest)
        assert state.bars == n and state.withheld == reference.withheld == n - len(batch), k


def splits_for(n: int, *more: int) -> set[int]:
    """Split points: none and one bar restored, around the warm-up, the middle, all but the
    last bar, all bars."""
    w = warmup_bars()
    return {k for k in (0, 1, w - 1, w, w + 1, n // 2, n - 1, n, *more) if 0 <= k <= n}


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_restore_then_update_continues_the_bundled_history_exactly(name):
    bars, labels = bundled(name)
    vix, proxy, regimes = inputs(labels)
    # 13 and 33: the RSI and MACD-signal seeds come next; 220: the next bar is a 20-bar anchor,
    # 221: the last restored one is; 255-257: the ring buffers wrap.
    check_restore(bars, vix, proxy, regimes, splits_for(len(bars), 13, 33, 220, 221, 255, 256, 257))


@settings(max_examples=50, deadline=None)
@given(random_history(), st.data())
def test_restore_then_update_continues_random_bars_exactly(history, data):
    bars, vix, proxy, regimes = history
    n = len(bars)
    more = data.draw(st.lists(st.integers(0, n), max_size=4), label="more splits")
    check_restore(bars, vix, proxy, regimes, splits_for(n, *more))


def test_restore_counts_withheld_bars_as_if_they_had_been_fed():
    n = warmup_bars() + 60
    bars = synthetic(100 + np.sin(np.arange(n) / 3))
    vix = [20.0] * n
    regimes: list[str | None] = ["normal"] * n
    regimes[warmup_bars() + 5] = None
    vix[warmup_bars() + 30] = math.nan  # withholds this bar and the next 19
    proxy = [False] * n
    k = warmup_bars() + 40  # inside the VIX gap: 10 more bars of it are withheld after restore
    state = restore_features(bars.iloc[:k], vix[:k], proxy[:k], regimes[:k])
    assert (state.bars, state.withheld) == (k, warmup_bars() + 1 + 10)
    rest = feed(state, bars.iloc[k:], vix[k:], proxy[k:], regimes[k:])
    assert (state.bars, state.withheld) == (n, warmup_bars() + 1 + 20)
    assert rest.index[0] == bars.index[warmup_bars() + 50] and len(rest) == n - k - 10
    full, _ = per_event(bars, vix, proxy, regimes)
    assert_agree(full.iloc[-len(rest) :], rest)


def test_restore_of_no_bars_is_a_fresh_state():
    bars = synthetic([10.0, 11.0])
    state = SymbolFeatures.restore(bars.iloc[:0], [], [], [])
    assert state_of(state) == state_of(SymbolFeatures())
    assert (state.bars, state.withheld) == (0, 0)


def test_restore_accepts_a_series_of_labels_with_nan_and_extra_columns():
    bars, labels = bundled("sp500")
    k = 300
    stored = bars.iloc[:k].assign(symbol="SPX")[["symbol", *reversed(COLUMNS)]]
    state = SymbolFeatures.restore(
        stored, labels["vix"].iloc[:k], labels["vix_source"].iloc[:k] == "proxy",
        labels["regime"].iloc[:k],
    )  # fmt: skip
    reference = SymbolFeatures()
    feed(reference, bars.iloc[:k], *(x[:k] for x in inputs(labels)))
    assert state_of(state) == state_of(reference)


def test_restore_rejects_bad_input_naming_the_column_or_day():
    bars = synthetic([10.0, 11.0, 12.0])
    ok = ([20.0] * 3, [False] * 3, ["normal"] * 3)
    with pytest.raises(DataError, match="missing column"):
        SymbolFeatures.restore(bars.drop(columns="close"), *ok)
    with pytest.raises(DataError, match="vix_is_proxy: 2 values for 3 bars"):
        SymbolFeatures.restore(bars, ok[0], [False] * 2, ok[2])
    bad = bars.copy()
    bad.loc[bars.index[2], "volume"] = -1.0
    with pytest.raises(DataError, match=r"bar 2000-01-05: volume -1\.0 is not a finite number"):
        SymbolFeatures.restore(bad, *ok)
    with pytest.raises(DataError, match=r"bar 2000-01-04: regime 'boom' is not one of"):
        restore_features(bars, *ok[:2], ["normal", "boom", None])
