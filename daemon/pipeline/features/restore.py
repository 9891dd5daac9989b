"""Restore: one symbol's per-event state rebuilt from its stored bars in one pass.

At start-up, or when a Kafka partition moves to this daemon, `SymbolFeatures.restore` must leave
a symbol in the state `update` would have reached on the same bars, without feeding them one by
one (about 10-14 µs a bar). Each part of that state is a function of the history, computed here
from the batch path's columns (`daemon.pipeline.features.batch`):

- ring buffers and deques hold the last `RING` values and the last window: copied;
- rolling extremes are the extremes of those windows (`update` keeps them exact): taken;
- a running sum `S += x_new - x_old` is the last value of the batch path's cumulative sum of the
  same differences: the same additions in the same order, so the same bits;
- the 20-bar close and volume sums: recomputed at the last anchor, then the running additions
  since, in `update`'s order (at most 39 values, a plain loop);
- the recursive averages (EMA, Wilder) remember the whole history, so they run over it with
  `update`'s arithmetic in a plain loop over floats: the recursion is sequential, a vectorised
  scan would round differently and cost as much (about 0.1 ms for 300 bars).

So the restored state equals the per-event state bit for bit and the rows that follow are the
ones the uninterrupted stream gives; tests/pipeline/test_features.py checks both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.pipeline.features.batch import (
    Array,
    checked_inputs,
    emitted,
    log_each,
    price_changes,
    shift,
)
from daemon.pipeline.features.defs import (
    ATR_A,
    ATR_N,
    BB_N,
    E12_A,
    E12_N,
    E26_A,
    E26_N,
    EXTREME_WINDOWS,
    MA_WINDOWS,
    MACD_READY,
    PARKINSON_WINDOW,
    RING,
    RSI_A,
    RSI_N,
    SIG_A,
    SIG_N,
    SKEW_WINDOWS,
    STOCH_N,
    VIX_MEAN_N,
    VOL_WINDOWS,
    VOLUME_N,
)


class State(NamedTuple):
    """The per-event state after a history, field by field as `SymbolFeatures` keeps it."""

    bars: int
    withheld: int
    #: log close, close, 1-bar log return, log(high / low), volume, VIX, log VIX (0.0 when the
    #: VIX is unknown); bar i in slot i & (RING - 1), zeros in slots no bar has reached yet.
    rings: list[list[float]]
    #: the last closes (10 and 60), highs (14) and lows (14), oldest first.
    windows: list[list[float]]
    sums: list[float]
    extremes: list[float]
    rec: list[float]
    vx_run: int
    anchors: list[float]


def restored_state(
    bars: pd.DataFrame,
    vix: npt.ArrayLike,
    vix_is_proxy: npt.ArrayLike,
    regimes: Sequence[str | None] | pd.Series[Any],
) -> State | None:
    """The state `SymbolFeatures.update` reaches after these bars, None for no bars.

    Arguments as for `compute_features` (checked the same way, `DataError` naming the day).
    """
    x = checked_inputs(bars, vix, vix_is_proxy, regimes)
    h, lo_, c, v, vix_arr, known = x.high, x.low, x.close, x.volume, x.vix, x.known
    k = len(c)
    if k == 0:
        return None
    lc, lh, ll = log_each(np.concatenate([c, h, lo_])).reshape(3, k)
    hl = lh - ll
    prev_c = shift(c, 1, c[0])
    r = lc - shift(lc, 1, lc[0])
    vx = np.where(known, vix_arr, 0.0)

    first = max(0, k - RING)
    lvx = np.zeros(k - first)
    tail_known = known[first:]
    lvx[tail_known] = log_each(vix_arr[first:][tail_known])
    rings = np.zeros((7, RING))
    rings[:, np.arange(first, k) & (RING - 1)] = (
        lc[first:],
        c[first:],
        r[first:],
        hl[first:],
        v[first:],
        vx[first:],
        lvx,
    )

    short, long_ = EXTREME_WINDOWS
    windows = [
        c[-short:].tolist(),
        c[-long_:].tolist(),
        h[-STOCH_N:].tolist(),
        lo_[-STOCH_N:].tolist(),
    ]
    d10, d60, dh14, dl14 = windows
    extremes = [max(d10), min(d10), max(d60), min(d60), max(dh14), min(dl14)]

    unknown = np.flatnonzero(~known)
    gain, loss, tr = price_changes(h, lo_, c, prev_c)
    return State(
        bars=k,
        withheld=k - int(np.count_nonzero(emitted(known, x.codes))),
        rings=rings.tolist(),
        windows=windows,
        sums=_running_sums(r, hl, c, v, vx),
        extremes=extremes,
        rec=_recursions(c, gain, loss, tr),
        vx_run=k if len(unknown) == 0 else k - 1 - int(unknown[-1]),
        anchors=[float(c[(k - 1) // BB_N * BB_N]), float(v[(k - 1) // VOLUME_N * VOLUME_N])],
    )


def _running_sums(r: Array, hl: Array, c: Array, v: Array, vx: Array) -> list[float]:
    """The 18 running sums of `SymbolFeatures`, in its order (see `SymbolFeatures.__init__`)."""
    r2 = r * r
    r3 = r * r * r
    windowed: list[tuple[Array, int]] = []
    for w in VOL_WINDOWS:
        windowed += [(p, w) for p in ((r, r2, r3) if w in SKEW_WINDOWS else (r, r2))]
    windowed.append((hl * hl, PARKINSON_WINDOW))
    windowed += [(c, w) for w in MA_WINDOWS if w != BB_N]
    windowed.append((vx, VIX_MEAN_N))
    n = len(r)
    steps = np.empty((len(windowed), n))
    for row, (x, w) in zip(steps, windowed, strict=True):
        row[:] = x  # x_new - x_old, with x_old = 0.0 before the first bar
        row[w:] -= x[: max(0, n - w)]
    running = np.cumsum(steps, axis=1)[:, -1].tolist()  # added left to right; 0.0 + x == x
    close_sums = _anchored_sums(c, BB_N)
    volume_sums = _anchored_sums(v, VOLUME_N)
    # r, r^2 over 5 and 10; r, r^2, r^3 over 21 and 63; log range^2; close over 50 and 200; VIX.
    return [*running[:11], *close_sums, *running[11:13], *volume_sums, running[13]]


def _anchored_sums(x: Array, w: int) -> list[float]:
    """Sum and sum of squares of the deviations from the anchor over the last w bars, as
    `SymbolFeatures` holds them: recomputed over the window at the anchor (the first bar of the
    last block of w bars, `_reanchor`), then updated by `y_new - y_old` for every bar since."""
    n = len(x)
    at = (n - 1) // w * w
    values = x.tolist()
    anchor = values[at]
    s1 = s2 = 0.0
    for value in values[max(0, at - w + 1) : at + 1]:
        y = value - anchor
        s1 += y
        s2 += y * y
    for j in range(at + 1, n):
        y = values[j] - anchor
        a = values[j - w] - anchor if j >= w else 0.0
        s1 += y - a
        s2 += y * y - a * a
    return [s1, s2]


def _sequential_sum(values: list[float]) -> float:
    """0.0 + x[0] + x[1] + ..., left to right, as a running sum adds them (the builtin `sum`
    compensates rounding from Python 3.12 on)."""
    total = 0.0
    for x in values:
        total += x
    return total


def _recursions(c: Array, gain: Array, loss: Array, tr: Array) -> list[float]:
    """EMA12, EMA26, MACD signal, RSI gain and loss, ATR, and the warm-up sums that seed them,
    after the last bar: the 12 values of `SymbolFeatures._rec`, 0.0 where not reached yet."""
    e12_b, e26_b, sig_b, rsi_b, atr_b = (1.0 - a for a in (E12_A, E26_A, SIG_A, RSI_A, ATR_A))
    closes, gains, losses, ranges = c.tolist(), gain.tolist(), loss.tolist(), tr.tolist()
    n = len(closes)
    c12 = _sequential_sum(closes[:E12_N])
    c26 = _sequential_sum(closes[:E26_N])
    e12 = e26 = sig = macd_sum = 0.0
    if n >= E12_N:
        e12 = c12 / E12_N
        for close in closes[E12_N:E26_N]:
            e12 = e12_b * e12 + E12_A * close
    if n >= E26_N:
        e26 = c26 / E26_N
        macd_sum = (e12 - e26) / closes[E26_N - 1]
        for close in closes[E26_N : MACD_READY + 1]:
            e12 = e12_b * e12 + E12_A * close
            e26 = e26_b * e26 + E26_A * close
            macd_sum += (e12 - e26) / close
    if n > MACD_READY:
        sig = macd_sum / SIG_N
        for close in closes[MACD_READY + 1 :]:
            e12 = e12_b * e12 + E12_A * close
            e26 = e26_b * e26 + E26_A * close
            sig = sig_b * sig + SIG_A * ((e12 - e26) / close)
    # Gains, losses and true ranges count from bar 1: bar 0 has no previous close.
    gain_sum = _sequential_sum(gains[1 : RSI_N + 1])
    loss_sum = _sequential_sum(losses[1 : RSI_N + 1])
    tr_sum = _sequential_sum(ranges[1 : ATR_N + 1])
    g = dn = atr = 0.0
    if n > RSI_N:
        g, dn = gain_sum / RSI_N, loss_sum / RSI_N
        for up, down in zip(gains[RSI_N + 1 :], losses[RSI_N + 1 :], strict=True):
            g = rsi_b * g + RSI_A * up
            dn = rsi_b * dn + RSI_A * down
    if n > ATR_N:
        atr = tr_sum / ATR_N
        for step in ranges[ATR_N + 1 :]:
            atr = atr_b * atr + ATR_A * step
    return [e12, e26, sig, g, dn, atr, c12, c26, macd_sum, gain_sum, loss_sum, tr_sum]
