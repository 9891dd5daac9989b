"""The batch path of the feature engine: a whole history of one symbol at once, vectorised.

Mirrors `daemon.pipeline.features.SymbolFeatures` expression by expression (see the module
docstring of `daemon.pipeline.features` for why the two agree); docs/features.md has the
definitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.domain import REGIMES
from daemon.errors import DataError
from daemon.pipeline.features.defs import (
    ATR_A,
    ATR_N,
    BB_N,
    E12_A,
    E12_N,
    E26_A,
    E26_N,
    EXTREME_WINDOWS,
    FEATURE_NAMES,
    FLAT_REL2,
    FLAT_VAR,
    MA_WINDOWS,
    PARKINSON_FACTOR,
    PARKINSON_WINDOW,
    RETURN_HORIZONS,
    RSI_A,
    RSI_N,
    SIG_A,
    SIG_N,
    SKEW_WINDOWS,
    STOCH_N,
    VIX_MEAN_N,
    VIX_RUN,
    VOL_FACTOR,
    VOL_WINDOWS,
    VOLUME_N,
    WARMUP,
    bad_bar_message,
    bad_regime_message,
)

Array = npt.NDArray[np.float64]

BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def log_each(x: Array) -> Array:
    """Natural logarithm of every value, with `math.log` as the per-event path takes it."""
    # numpy's vectorised log may differ from libm by one unit in the last place on some CPUs,
    # and the paths are meant to agree bit for bit here.
    return np.fromiter(map(math.log, x.tolist()), dtype=np.float64, count=len(x))


def shift(x: Array, k: int, fill: float) -> Array:
    """x moved k bars later; the first k values are `fill`."""
    out = np.full(len(x), fill)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def _rsum(x: Array, w: int) -> Array:
    """Sum over the last w bars, as the running sum S += x_new - x_old computes it."""
    return np.cumsum(x - shift(x, w, 0.0))


def _anchored(x: Array, w: int) -> tuple[Array, Array, Array, Array]:
    """Window moments from sums of deviations from an anchor, as the per-event path keeps them.

    The anchor is x at the first bar of each block of w bars; at that bar the sums are
    recomputed over the window (oldest first), in between they run. Returns the deviation
    of x from its anchor, the window's mean deviation, its population variance and the anchor.
    """
    n = len(x)
    idx = np.arange(n)
    starts = idx[::w]
    anchor = np.repeat(x[starts], w)[:n]
    y = x - anchor
    out = np.where(idx >= w, shift(x, w, 0.0) - anchor, 0.0)
    d1 = y - out
    d2 = y * y - out * out
    s1 = np.zeros(len(starts))
    s2 = np.zeros(len(starts))
    for k in range(w - 1, -1, -1):
        j = starts - k
        dev = np.where(j >= 0, x[np.maximum(j, 0)] - x[starts], 0.0)
        s1 = s1 + dev
        s2 = s2 + dev * dev
    d1[starts] = s1
    d2[starts] = s2
    mean = _block_cumsum(d1, w) / w
    return y, mean, _block_cumsum(d2, w) / w - mean * mean, anchor


def _block_cumsum(x: Array, w: int) -> Array:
    """Cumulative sums restarting at every block of w bars (sequential within a block)."""
    padded = np.concatenate([x, np.zeros(-len(x) % w)]).reshape(-1, w)
    return np.cumsum(padded, axis=1).reshape(-1)[: len(x)]


def _recursive(x: Array, n: int, first: int, alpha: float) -> Array:
    """Mean of x[first : first + n] at bar first + n - 1, then y = (1 - alpha) y + alpha x."""
    out = np.full(len(x), np.nan)
    seed_at = first + n - 1
    if len(x) <= seed_at:
        return out
    z = x.copy()
    z[:seed_at] = np.nan
    z[seed_at] = float(np.cumsum(x[first : seed_at + 1])[-1]) / n
    smoothed = pd.Series(z).ewm(alpha=alpha, adjust=False).mean()
    return smoothed.to_numpy(dtype=np.float64)


def _rolling(x: Array, w: int, how: str) -> Array:
    """Rolling max or min over the last w bars (fewer at the start)."""
    r = pd.Series(x).rolling(w, min_periods=1)
    return (r.max() if how == "max" else r.min()).to_numpy(dtype=np.float64)


def _safe_div(num: Array, den: Array, ok: npt.NDArray[np.bool_], default: float) -> Array:
    """num / den where `ok`, else `default`, without dividing by zero anywhere."""
    return np.where(ok, num / np.where(ok, den, 1.0), default)


_CODES = {r: i for i, r in enumerate(REGIMES)}


def _regime_codes(
    index: pd.Index, regimes: Sequence[str | None] | pd.Series[Any]
) -> npt.NDArray[np.int64]:
    """Position of each bar's regime in REGIMES, -1 when the regime is unknown (None/NaN)."""
    labels = regimes.tolist() if isinstance(regimes, pd.Series) else list(regimes)
    codes = np.fromiter(map(_CODES.get, labels, repeat(-1)), dtype=np.int64, count=len(labels))
    for j in np.flatnonzero(codes < 0).tolist():
        if not pd.isna(labels[j]):
            raise DataError(bad_regime_message(_day(index, j), labels[j]))
    return codes


def _day(index: pd.Index, j: int) -> str:
    label = index[j]
    return str(label.date()) if isinstance(label, pd.Timestamp) else f"{j} ({label})"


class Inputs(NamedTuple):
    """One symbol's checked history as arrays, one value per bar."""

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    vix: Array  # NaN when unknown
    known: npt.NDArray[np.bool_]  # the VIX reading is known
    proxy: npt.NDArray[np.bool_]
    codes: npt.NDArray[np.int64]  # position of the regime in REGIMES, -1 when undecided


def checked_inputs(
    bars: pd.DataFrame,
    vix: npt.ArrayLike,
    vix_is_proxy: npt.ArrayLike,
    regimes: Sequence[str | None] | pd.Series[Any],
) -> Inputs:
    """The arguments of `compute_features` as arrays; raises `DataError` naming the first bad
    column, length, day or value."""
    if tuple(bars.columns) == BAR_COLUMNS:  # one float block: one conversion, not five
        ohlcv = bars.to_numpy(dtype=np.float64).T
    else:
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise DataError(
                f"bars: missing column(s) {', '.join(missing)} "
                f"(columns found: {', '.join(map(str, bars.columns))})"
            )
        ohlcv = np.array([bars[col].to_numpy(dtype=np.float64) for col in BAR_COLUMNS])
    n = len(bars)
    vix_arr = np.asarray(vix, dtype=np.float64).reshape(-1)
    proxy = np.asarray(vix_is_proxy, dtype=bool).reshape(-1)
    for name, length in (("vix", len(vix_arr)), ("vix_is_proxy", len(proxy))):
        if length != n:
            raise DataError(f"{name}: {length} values for {n} bars; expected one per bar")
    if len(regimes) != n:
        raise DataError(f"regimes: {len(regimes)} values for {n} bars; expected one per bar")
    ohlcv = np.ascontiguousarray(ohlcv.reshape(5, n))
    good = (ohlcv[:4] > 0.0).all(axis=0) & (ohlcv[4] >= 0.0) & np.isfinite(ohlcv).all(axis=0)
    if not good.all():
        j = int(np.argmin(good))
        raise DataError(bad_bar_message(_day(bars.index, j), *ohlcv[:, j].tolist()))
    o, h, lo_, c, v = ohlcv
    known = ~np.isnan(vix_arr)
    bad_vix = known & ~((vix_arr > 0) & np.isfinite(vix_arr))
    if bad_vix.any():
        j = int(np.argmax(bad_vix))
        raise DataError(
            f"bar {_day(bars.index, j)}: VIX {float(vix_arr[j])!r} is not a positive finite number"
        )
    codes = _regime_codes(bars.index, regimes)
    return Inputs(o, h, lo_, c, v, vix_arr, known, proxy, codes)


def emitted(known: npt.NDArray[np.bool_], codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Which bars give a row: past the warm-up, with a regime and 20 known VIX readings."""
    idx = np.arange(len(known))
    run = idx - np.maximum.accumulate(np.where(known, -1, idx))
    return (idx >= WARMUP) & (run >= VIX_RUN) & (codes >= 0)


def price_changes(h: Array, lo_: Array, c: Array, prev_c: Array) -> tuple[Array, Array, Array]:
    """Gain, loss (both >= 0) and true range of every bar, the inputs of RSI and ATR."""
    diff = c - prev_c
    gain = np.where(diff > 0.0, diff, 0.0)
    loss = np.where(diff < 0.0, -diff, 0.0)
    tr = np.maximum(np.maximum(h - lo_, np.abs(h - prev_c)), np.abs(lo_ - prev_c))
    return gain, loss, tr


def compute_features(
    bars: pd.DataFrame,
    vix: npt.ArrayLike,
    vix_is_proxy: npt.ArrayLike,
    regimes: Sequence[str | None] | pd.Series[Any],
) -> pd.DataFrame:
    """The feature rows of a whole history of one symbol (the batch path).

    `bars` has columns open, high, low, close, volume, one row per bar in time order; `vix`
    the VIX (or proxy) reading of each bar, NaN when unknown; `vix_is_proxy` whether that
    reading is the proxy; `regimes` each bar's regime, None (or NaN) when undecided. Returns
    only the rows with enough real history, columns `FEATURE_NAMES`, indexed like `bars`.
    The same rows and values as feeding the bars one by one to `SymbolFeatures`.
    """
    x = checked_inputs(bars, vix, vix_is_proxy, regimes)
    cols = _columns(x.open, x.high, x.low, x.close, x.volume, x.vix, x.known, x.proxy, x.codes)
    emit = emitted(x.known, x.codes)
    return pd.DataFrame({name: cols[name][emit] for name in FEATURE_NAMES}, index=bars.index[emit])


def _columns(
    o: Array,
    h: Array,
    lo_: Array,
    c: Array,
    v: Array,
    vix: Array,
    known: npt.NDArray[np.bool_],
    proxy: npt.NDArray[np.bool_],
    codes: npt.NDArray[np.int64],
) -> dict[str, Array]:
    """Every feature for every bar (garbage or NaN where history is short; masked later)."""
    lo, lh, ll, lc = log_each(o), log_each(h), log_each(lo_), log_each(c)
    prev_c = shift(c, 1, c[0]) if len(c) else c
    prev_lc = shift(lc, 1, lc[0]) if len(c) else lc
    r = lc - prev_lc
    hl = lh - ll
    f: dict[str, Array] = {}

    for k in RETURN_HORIZONS:
        f[f"ret_{k}"] = r if k == 1 else lc - shift(lc, k, np.nan)
    r2 = r * r
    r3 = r * r * r
    for w in VOL_WINDOWS:
        mean = _rsum(r, w) / w
        b = _rsum(r2, w) / w
        m2 = b - mean * mean
        flat = ~(m2 > FLAT_VAR)
        f[f"vol_{w}"] = np.sqrt(np.where(flat, 0.0, VOL_FACTOR[w] * m2))
        if w in SKEW_WINDOWS:
            m3 = _rsum(r3, w) / w - mean * (3.0 * b - 2.0 * mean * mean)
            f[f"skew_{w}"] = _safe_div(m3, m2 * np.sqrt(np.where(flat, 1.0, m2)), ~flat, 0.0)
    pk = _rsum(hl * hl, PARKINSON_WINDOW) / PARKINSON_WINDOW
    f[f"parkinson_vol_{PARKINSON_WINDOW}"] = np.sqrt(
        np.where(pk > FLAT_VAR, PARKINSON_FACTOR * pk, 0.0)
    )

    gain, loss, tr = price_changes(h, lo_, c, prev_c)
    g = _recursive(gain, RSI_N, 1, RSI_A)
    dn = _recursive(loss, RSI_N, 1, RSI_A)
    f[f"rsi_{RSI_N}"] = _safe_div(100.0 * g, g + dn, g + dn > 0.0, 50.0)
    macd = (_recursive(c, E12_N, 0, E12_A) - _recursive(c, E26_N, 0, E26_A)) / c
    sig = _recursive(macd, SIG_N, E26_N - 1, SIG_A)
    f["macd"], f["macd_signal"], f["macd_hist"] = macd, sig, macd - sig

    hh = _rolling(h, STOCH_N, "max")
    low_min = _rolling(lo_, STOCH_N, "min")
    rng = hh - low_min
    f[f"stoch_k_{STOCH_N}"] = _safe_div(c - low_min, rng, rng > 0.0, 0.5)

    yc, mc, bvar, anchor = _anchored(c, BB_N)
    ma = {w: _rsum(c, w) / w for w in MA_WINDOWS if w != BB_N}
    ma20 = ma[BB_N] = anchor + mc
    bsd = np.sqrt(np.where(bvar > FLAT_REL2 * ma20 * ma20, bvar, 0.0))
    f[f"bb_pctb_{BB_N}"] = 0.5 + _safe_div(yc - mc, 4.0 * bsd, bsd > 0.0, 0.0)
    f[f"bb_width_{BB_N}"] = 4.0 * bsd / ma20

    f[f"atr_{ATR_N}"] = _recursive(tr, ATR_N, 1, ATR_A) / c
    f["hl_range"] = hl
    f["close_location"] = _safe_div(c - lo_, h - lo_, h > lo_, 0.5)
    f["gap"] = lo - prev_lc
    f["body"] = lc - lo
    f["upper_wick"] = lh - np.maximum(lo, lc)
    f["lower_wick"] = np.minimum(lo, lc) - ll

    yv, mv, vvar, anchor = _anchored(v, VOLUME_N)
    vm = anchor + mv
    vok = vvar > FLAT_REL2 * vm * vm
    f[f"volume_z_{VOLUME_N}"] = _safe_div(yv - mv, np.sqrt(np.where(vok, vvar, 1.0)), vok, 0.0)

    for w in EXTREME_WINDOWS:
        f[f"drawdown_{w}"] = c / _rolling(c, w, "max") - 1.0
        f[f"rebound_{w}"] = c / _rolling(c, w, "min") - 1.0
    for w in MA_WINDOWS:
        f[f"ma_dist_{w}"] = c / ma[w] - 1.0
    f["ma_20_50"] = ma[20] / ma[50] - 1.0
    f["ma_50_200"] = ma[50] / ma[200] - 1.0

    vx = np.where(known, vix, 0.0)
    lvx = np.zeros(len(vix))
    lvx[known] = log_each(vix[known])
    vmean = _rsum(vx, VIX_MEAN_N) / VIX_MEAN_N
    f["vix_level"] = vx
    f["vix_chg_1"] = lvx - shift(lvx, 1, 0.0)
    f["vix_chg_5"] = lvx - shift(lvx, 5, 0.0)
    f[f"vix_rel_{VIX_MEAN_N}"] = _safe_div(vx, vmean, vmean > 0.0, 0.0) - 1.0
    f["vix_minus_vol_21"] = vx / 100.0 - f["vol_21"]
    f["vix_is_proxy"] = proxy.astype(np.float64)
    for j, regime in enumerate(REGIMES):
        f[f"regime_{regime}"] = (codes == j).astype(np.float64)
    return f


def features_from_labels(bars: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """`compute_features` fed from `daemon.pipeline.regime.label_history` output for the same bars.

    `labels` has columns vix, vix_source ("vix", "proxy" or "none") and regime, indexed like
    `bars`.
    """
    if not labels.index.equals(bars.index):
        raise DataError(
            f"labels: index does not match the bars' ({len(labels)} labels for {len(bars)} "
            "bars); expected the output of label_history for these bars"
        )
    return compute_features(
        bars,
        labels["vix"].to_numpy(dtype=np.float64),
        (labels["vix_source"] == "proxy").to_numpy(dtype=bool),
        labels["regime"],
    )
