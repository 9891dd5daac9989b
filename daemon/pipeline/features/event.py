"""The per-event path of the feature engine: per-symbol ring buffers and running sums.

`SymbolFeatures.update` does O(1) work per bar (a rolling extreme is rescanned, O(window), only
when it leaves its window) in plain Python: numpy's per-call overhead would cost more than the
arithmetic. The windows are written out literally for speed; `daemon.pipeline.features.batch`
takes them from `daemon.pipeline.features.defs`, so a window changed in one place only makes the
agreement tests fail. docs/features.md has the definitions.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.errors import DataError
from daemon.pipeline.features.defs import (
    ATR_A,
    ATR_N,
    E12_A,
    E12_N,
    E26_A,
    E26_N,
    FEATURE_NAMES,
    FLAT_REL2,
    FLAT_VAR,
    MACD_READY,
    ONE_HOT,
    PARKINSON_FACTOR,
    RING,
    RSI_A,
    RSI_N,
    SIG_A,
    SIG_N,
    VIX_RUN,
    VOL_FACTOR,
    WARMUP,
    bad_bar_message,
    bad_regime_message,
    level_moments,
    return_moments,
)
from daemon.pipeline.features.restore import restored_state

_RING: Final = RING
_M: Final = _RING - 1
_INF: Final = math.inf
_log = math.log
_sqrt = math.sqrt
_pack = struct.Struct(f"={len(FEATURE_NAMES)}d").pack

# Per-window constants, unpacked once so the hot path reads locals, not dicts.
_V5, _V10, _V21, _V63 = (VOL_FACTOR[w] for w in (5, 10, 21, 63))
_E12B, _E26B, _SIGB, _RSIB, _ATRB = (1.0 - a for a in (E12_A, E26_A, SIG_A, RSI_A, ATR_A))


class SymbolFeatures:
    """Per-symbol state of the per-event path; `update` once per bar, in time order.

    `withheld` counts the bars for which `update` returned None: the warm-up (see
    `warmup_bars`), bars without a regime, and bars whose VIX or recent VIX history is unknown.
    A state from `restore` counts its restored bars as if they had been fed one by one.
    """

    __slots__ = (
        "_anc",
        "_c",
        "_d10",
        "_d60",
        "_dh14",
        "_dl14",
        "_hl",
        "_i",
        "_lc",
        "_lvx",
        "_r",
        "_rec",
        "_sums",
        "_v",
        "_vx",
        "_vx_run",
        "_x",
        "withheld",
    )

    def __init__(self) -> None:
        self.withheld = 0
        self._i = -1
        # Ring buffers indexed by bar number & _M; zeros stand for "before the first bar".
        self._lc = [0.0] * _RING  # log close
        self._c = [0.0] * _RING  # close
        self._r = [0.0] * _RING  # 1-bar log return (0.0 for the first bar)
        self._hl = [0.0] * _RING  # log(high / low)
        self._v = [0.0] * _RING  # volume
        self._vx = [0.0] * _RING  # VIX (0.0 when unknown)
        self._lvx = [0.0] * _RING  # log VIX (0.0 when unknown)
        self._d10: deque[float] = deque(maxlen=10)
        self._d60: deque[float] = deque(maxlen=60)
        self._dh14: deque[float] = deque(maxlen=14)
        self._dl14: deque[float] = deque(maxlen=14)
        # Running sums: returns over 5/10/21/63 bars (r, r^2, and r^3 for 21/63), log range
        # squared over 21, close - anchor and its square over 20, close over 50 and 200, volume
        # - anchor and its square over 20, VIX over 20.
        self._sums = [0.0] * 18
        # Rolling extremes: max/min close over 10 and 60, max high and min low over 14.
        self._x = [0.0, _INF, 0.0, _INF, 0.0, _INF]
        # Recursive averages: EMA12, EMA26, MACD signal, RSI gain, RSI loss, ATR; and the
        # warm-up sums that seed them.
        self._rec = [0.0] * 12
        self._vx_run = 0
        self._anc = [0.0, 0.0]  # anchors of the 20-bar close and volume sums

    @classmethod
    def restore(
        cls,
        bars: pd.DataFrame,
        vix: npt.ArrayLike,
        vix_is_proxy: npt.ArrayLike,
        regimes: Sequence[str | None] | pd.Series[Any],
    ) -> SymbolFeatures:
        """The state `update` would reach on these bars, computed from them at once.

        For start-up and for a partition that moved here, instead of replaying Kafka: several
        times faster than feeding the bars one by one (benchmarks/feature_restore.py), and the
        same state bit for bit, so the rows that follow are those `update` would give after the
        same bars. Arguments as for `compute_features` (`bars` with columns open, high, low,
        close, volume, in time order); raises `DataError` for a bad value, naming its day.
        `bars` and `withheld` count the restored bars, each withheld if `update` would have
        returned None for it.
        """
        state = restored_state(bars, vix, vix_is_proxy, regimes)
        restored = cls()
        if state is None:
            return restored
        restored._i = state.bars - 1
        restored.withheld = state.withheld
        (
            restored._lc,
            restored._c,
            restored._r,
            restored._hl,
            restored._v,
            restored._vx,
            restored._lvx,
        ) = state.rings
        for window, values in zip(
            (restored._d10, restored._d60, restored._dh14, restored._dl14),
            state.windows,
            strict=True,
        ):
            window.extend(values)
        restored._sums = state.sums
        restored._x = state.extremes
        restored._rec = state.rec
        restored._vx_run = state.vx_run
        restored._anc = state.anchors
        return restored

    @property
    def bars(self) -> int:
        """How many bars this symbol has seen."""
        return self._i + 1

    def update(
        self,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        vix: float | None,
        vix_is_proxy: bool,
        regime: str | None,
    ) -> npt.NDArray[np.float64] | None:
        """Feed the next bar; return its feature row, or None while history is too short.

        `vix` is the VIX (or proxy) reading for the bar's day, NaN or None when unknown;
        `regime` the bar's regime label, None when undecided. A None return is counted in
        `withheld`. Raises `DataError` for a non-positive or non-finite price, a negative or
        non-finite volume, a non-positive VIX, or an unknown regime name; the state is then
        unchanged.
        """
        row = self.update_row(open, high, low, close, volume, vix, vix_is_proxy, regime)
        if row is None:
            return None
        # Packing into bytes and viewing them is about twice as fast as np.array(list).
        return np.frombuffer(bytearray(_pack(*row)), dtype=np.float64)

    def update_row(
        self,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        vix: float | None,
        vix_is_proxy: bool,
        regime: str | None,
    ) -> list[float] | None:
        """`update` with the row as a list of `len(FEATURE_NAMES)` floats, for a caller that
        converts it itself (the pipeline packs float32 for the store)."""
        if not (
            0.0 < open < _INF
            and 0.0 < high < _INF
            and 0.0 < low < _INF
            and 0.0 < close < _INF
            and 0.0 <= volume < _INF
        ):
            raise DataError(bad_bar_message(self._where(), open, high, low, close, volume))
        if vix is not None and vix == vix:
            if not 0.0 < vix < _INF:
                raise DataError(f"bar {self._where()}: VIX {vix!r} is not a positive finite number")
            vx = vix
            lvx = _log(vix)
            run = self._vx_run + 1
        else:
            vx = lvx = 0.0
            run = 0
        if regime is not None and regime not in ONE_HOT:
            if regime == regime:  # NaN, as pandas spells a missing label, means undecided
                raise DataError(bad_regime_message(self._where(), regime))
            regime = None

        i = self._i + 1
        self._i = i
        k = i & _M
        lc_ring, c_ring, r_ring, hl_ring = self._lc, self._c, self._r, self._hl
        v_ring, vx_ring, lvx_ring = self._v, self._vx, self._lvx
        lo = _log(open)
        lh = _log(high)
        ll = _log(low)
        lc = _log(close)
        if i:
            prev_c = c_ring[(i - 1) & _M]
            prev_lc = lc_ring[(i - 1) & _M]
            r = lc - prev_lc
        else:
            prev_c = close
            prev_lc = lc
            r = 0.0
        hl = lh - ll
        self._vx_run = run
        lc_ring[k] = lc
        c_ring[k] = close
        r_ring[k] = r
        hl_ring[k] = hl
        v_ring[k] = volume
        vx_ring[k] = vx
        lvx_ring[k] = lvx

        # Running sums; the outgoing value of a window of w bars sits in slot (i - w) & _M.
        s = self._sums
        a = r_ring[(i - 5) & _M]
        s[0] += r - a
        s[1] += r * r - a * a
        a = r_ring[(i - 10) & _M]
        s[2] += r - a
        s[3] += r * r - a * a
        a = r_ring[(i - 21) & _M]
        s[4] += r - a
        s[5] += r * r - a * a
        s[6] += r * r * r - a * a * a
        a = r_ring[(i - 63) & _M]
        s[7] += r - a
        s[8] += r * r - a * a
        s[9] += r * r * r - a * a * a
        a = hl_ring[(i - 21) & _M]
        s[10] += hl * hl - a * a
        a = c_ring[(i - 50) & _M]
        s[13] += close - a
        a = c_ring[(i - 200) & _M]
        s[14] += close - a
        # Close and volume over 20 bars: sums of deviations from an anchor (the first value of
        # each block of 20 bars), recomputed at every block start, so that the variance keeps
        # its precision whatever the price or volume did before.
        if i % 20:
            anc = self._anc
            yc = close - anc[0]
            yv = volume - anc[1]
            if i >= 20:
                a = c_ring[(i - 20) & _M] - anc[0]
                b = v_ring[(i - 20) & _M] - anc[1]
            else:
                a = b = 0.0
            s[11] += yc - a
            s[12] += yc * yc - a * a
            s[15] += yv - b
            s[16] += yv * yv - b * b
        else:
            yc = yv = 0.0
            self._reanchor(i)
        s[17] += vx - vx_ring[(i - 20) & _M]

        # Rolling extremes, recomputed over the window only when the extreme leaves it.
        x = self._x
        d = self._d10
        d.append(close)
        a = c_ring[(i - 10) & _M]
        if close >= x[0]:
            x[0] = close
        elif a == x[0]:
            x[0] = max(d)
        if close <= x[1]:
            x[1] = close
        elif a == x[1]:
            x[1] = min(d)
        d = self._d60
        d.append(close)
        a = c_ring[(i - 60) & _M]
        if close >= x[2]:
            x[2] = close
        elif a == x[2]:
            x[2] = max(d)
        if close <= x[3]:
            x[3] = close
        elif a == x[3]:
            x[3] = min(d)
        d = self._dh14
        a = d[0] if len(d) == 14 else 0.0
        d.append(high)
        if high >= x[4]:
            x[4] = high
        elif a == x[4]:
            x[4] = max(d)
        d = self._dl14
        a = d[0] if len(d) == 14 else 0.0
        d.append(low)
        if low <= x[5]:
            x[5] = low
        elif a == x[5]:
            x[5] = min(d)

        # Recursive averages (EMA, Wilder), seeded with the simple mean of their first n inputs.
        diff = close - prev_c
        gain = diff if diff > 0.0 else 0.0
        loss = -diff if diff < 0.0 else 0.0
        tr = max(high - low, abs(high - prev_c), abs(low - prev_c))
        q = self._rec
        if i > MACD_READY:
            e12 = q[0] = _E12B * q[0] + E12_A * close
            e26 = q[1] = _E26B * q[1] + E26_A * close
            macd = (e12 - e26) / close
            sig = q[2] = _SIGB * q[2] + SIG_A * macd
            g = q[3] = _RSIB * q[3] + RSI_A * gain
            dn = q[4] = _RSIB * q[4] + RSI_A * loss
            atr = q[5] = _ATRB * q[5] + ATR_A * tr
        else:
            self._seed(i, close, gain, loss, tr)
            e12, e26, sig, g, dn, atr = q[0], q[1], q[2], q[3], q[4], q[5]
            macd = (e12 - e26) / close

        if i < WARMUP or run < VIX_RUN or regime is None:
            self.withheld += 1
            return None

        m5, m10, m21, t21, m63, t63 = return_moments(s)
        pk, mc, ma20, bvar, ma50, ma200, mv, vm, vvar = level_moments(s, self._anc)
        vol21 = _sqrt(_V21 * m21) if m21 > FLAT_VAR else 0.0
        bsd = _sqrt(bvar) if bvar > FLAT_REL2 * ma20 * ma20 else 0.0
        rng = x[4] - x[5]
        hi_oc = lo if lo > lc else lc
        lo_oc = lo if lo < lc else lc
        out = [
            r,
            lc - lc_ring[(i - 5) & _M],
            lc - lc_ring[(i - 10) & _M],
            lc - lc_ring[(i - 20) & _M],
            lc - lc_ring[(i - 60) & _M],
            _sqrt(_V5 * m5) if m5 > FLAT_VAR else 0.0,
            _sqrt(_V10 * m10) if m10 > FLAT_VAR else 0.0,
            vol21,
            _sqrt(_V63 * m63) if m63 > FLAT_VAR else 0.0,
            _sqrt(PARKINSON_FACTOR * pk) if pk > FLAT_VAR else 0.0,
            t21 / (m21 * _sqrt(m21)) if m21 > FLAT_VAR else 0.0,
            t63 / (m63 * _sqrt(m63)) if m63 > FLAT_VAR else 0.0,
            100.0 * g / (g + dn) if g + dn > 0.0 else 50.0,
            macd,
            sig,
            macd - sig,
            (close - x[5]) / rng if rng > 0.0 else 0.5,
            0.5 + (yc - mc) / (4.0 * bsd) if bsd > 0.0 else 0.5,
            4.0 * bsd / ma20,
            atr / close,
            hl,
            (close - low) / (high - low) if high > low else 0.5,
            lo - prev_lc,
            lc - lo,
            lh - hi_oc,
            lo_oc - ll,
            (yv - mv) / _sqrt(vvar) if vvar > FLAT_REL2 * vm * vm else 0.0,
            close / x[0] - 1.0,
            close / x[2] - 1.0,
            close / x[1] - 1.0,
            close / x[3] - 1.0,
            close / ma20 - 1.0,
            close / ma50 - 1.0,
            close / ma200 - 1.0,
            ma20 / ma50 - 1.0,
            ma50 / ma200 - 1.0,
            vx,
            lvx - lvx_ring[(i - 1) & _M],
            lvx - lvx_ring[(i - 5) & _M],
            vx / (s[17] / 20) - 1.0,
            vx / 100.0 - vol21,
            1.0 if vix_is_proxy else 0.0,
        ]
        out += ONE_HOT[regime]
        return out

    def _reanchor(self, i: int) -> None:
        """Start a block of 20 bars: anchor at this bar, recompute the 20-bar deviation sums."""
        c_ring, v_ring, s = self._c, self._v, self._sums
        ac = self._anc[0] = c_ring[i & _M]
        av = self._anc[1] = v_ring[i & _M]
        s1 = s2 = t1 = t2 = 0.0
        for j in range(max(0, i - 19), i + 1):  # oldest first, as the batch path adds them
            y = c_ring[j & _M] - ac
            s1 += y
            s2 += y * y
            y = v_ring[j & _M] - av
            t1 += y
            t2 += y * y
        s[11], s[12], s[15], s[16] = s1, s2, t1, t2

    def _where(self) -> str:
        return f"{self._i + 2} of this symbol"

    def _seed(self, i: int, close: float, gain: float, loss: float, tr: float) -> None:
        """Warm-up of the recursive averages: sum their first inputs, then seed with the mean."""
        q = self._rec
        # q[6..11]: warm-up sums of close (EMA12, EMA26), MACD, gain, loss, true range.
        if i <= E12_N - 1:
            q[6] += close
            if i == E12_N - 1:
                q[0] = q[6] / E12_N
        else:
            q[0] = _E12B * q[0] + E12_A * close
        if i <= E26_N - 1:
            q[7] += close
            if i == E26_N - 1:
                q[1] = q[7] / E26_N
        else:
            q[1] = _E26B * q[1] + E26_A * close
        if i >= E26_N - 1:
            q[8] += (q[0] - q[1]) / close
            if i == MACD_READY:
                q[2] = q[8] / SIG_N
        if 1 <= i <= RSI_N:
            q[9] += gain
            q[10] += loss
            if i == RSI_N:
                q[3] = q[9] / RSI_N
                q[4] = q[10] / RSI_N
        elif i > RSI_N:
            q[3] = _RSIB * q[3] + RSI_A * gain
            q[4] = _RSIB * q[4] + RSI_A * loss
        if 1 <= i <= ATR_N:
            q[11] += tr
            if i == ATR_N:
                q[5] = q[11] / ATR_N
        elif i > ATR_N:
            q[5] = _ATRB * q[5] + ATR_A * tr
