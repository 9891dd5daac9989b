"""The per-event feature engine for many symbols at once: one numpy pass per step of a batch.

`SymbolFeatures.update` is plain Python per bar (numpy's per-call overhead would cost more than
the arithmetic of one bar). When a poll holds bars of many symbols, `FeatureBank.update` takes
the next bar of each of them together: every ring buffer, running sum and recursive average of
every symbol sits in one row of a 2-D array, and each line of `SymbolFeatures.update_row` becomes
one numpy operation over the step's symbols.

It is the same computation, not an approximation: the same float64 operations in the same order
(numpy's elementwise +, -, *, / and sqrt round exactly as Python's floats do; logarithms go
through `math.log`, as in the per-event path, because numpy's vectorised log may differ by one
unit in the last place), so a symbol gives the same rows bit for bit whichever engine it runs
in (tests/pipeline/test_feature_bank.py). Rolling extremes are taken over their windows each step
instead of being kept incrementally: a maximum is exact either way.

A symbol joins the bank from a `SymbolFeatures` state once its recursive averages are seeded
(`ready`): the warm-up branches stay in the per-event path, which every new symbol runs for its
first bars.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from daemon.domain import REGIMES
from daemon.errors import DataError
from daemon.pipeline.features.batch import log_each
from daemon.pipeline.features.defs import (
    ATR_A,
    E12_A,
    E26_A,
    FEATURE_NAMES,
    FLAT_REL2,
    FLAT_VAR,
    MACD_READY,
    PARKINSON_FACTOR,
    RING,
    RSI_A,
    SIG_A,
    VIX_RUN,
    VOL_FACTOR,
    WARMUP,
    level_moments,
    return_moments,
)
from daemon.pipeline.features.event import SymbolFeatures

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_M: Final = RING - 1
_N_FEATURES: Final = len(FEATURE_NAMES)
_N_REGIMES: Final = len(REGIMES)
_V5, _V10, _V21, _V63 = (VOL_FACTOR[w] for w in (5, 10, 21, 63))
_E12B, _E26B, _SIGB, _RSIB, _ATRB = (1.0 - a for a in (E12_A, E26_A, SIG_A, RSI_A, ATR_A))
# Offsets back from the current bar of the rolling-extreme windows (current bar included).
_BACK10: Final = np.arange(10)
_BACK60: Final = np.arange(60)
_BACK14: Final = np.arange(14)
_BACK20: Final = np.arange(19, -1, -1)  # oldest first, as `_reanchor` adds them
# Rings, in `SymbolFeatures` order, then high and low (the per-event path keeps those in deques).
_LC, _C, _R, _HL, _V, _VX, _LVX, _H, _L = range(9)
#: The `SymbolFeatures` attributes of the first seven rings.
_RING_ATTRS: Final = ("_lc", "_c", "_r", "_hl", "_v", "_vx", "_lvx")


def ready(state: SymbolFeatures) -> bool:
    """Whether a symbol's next bar can run in the bank: its recursive averages are seeded."""
    return state.bars > MACD_READY


class FeatureBank:
    """Per-event state of many symbols, one slot (row) each; `update` runs a step of them."""

    _rings: Floats  # (9 rings, slots, RING)
    _i: Ints
    withheld: Ints
    _vx_run: Ints
    _sums: Floats
    _rec: Floats
    _anc: Floats

    def __init__(self, capacity: int = 64) -> None:
        self.slots: dict[str, int] = {}
        self._alloc(max(1, capacity))
        self._free = list(range(self.capacity - 1, -1, -1))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "_rings", None)
        rings = np.zeros((9, capacity, RING))
        rings[_L] = math.inf
        i = np.full(capacity, -1, dtype=np.int64)
        withheld = np.zeros(capacity, dtype=np.int64)
        vx_run = np.zeros(capacity, dtype=np.int64)
        sums = np.zeros((capacity, 18))
        rec = np.zeros((capacity, 12))
        anc = np.zeros((capacity, 2))
        if old is not None:
            n = old.shape[1]
            rings[:, :n] = old
            i[:n], withheld[:n], vx_run[:n] = self._i, self.withheld, self._vx_run
            sums[:n], rec[:n], anc[:n] = self._sums, self._rec, self._anc
        self._rings, self._i, self.withheld, self._vx_run = rings, i, withheld, vx_run
        self._sums, self._rec, self._anc = sums, rec, anc

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def capacity(self) -> int:
        """Slots allocated (they grow by doubling)."""
        return int(self._rings.shape[1])

    def closes(self, slots: Ints, back: int) -> Floats:
        """The last `back` closes of each symbol in `slots`, newest first; NaN before its
        first bar."""
        j = self._i[slots][:, None] - np.arange(back)
        window = self._rings[_C][slots[:, None], j & _M]
        return np.where(j >= 0, window, np.nan)

    def export(self, slot: int) -> SymbolFeatures:
        """The per-event state of the symbol in `slot`: what `SymbolFeatures.update` would hold
        after the same bars (the inverse of `add`)."""
        state = SymbolFeatures()
        i = int(self._i[slot])
        state._i = i
        state.withheld = int(self.withheld[slot])
        rings = self._rings
        for name, values in zip(_RING_ATTRS, rings[:_H, slot].tolist(), strict=True):
            setattr(state, name, values)
        for window, ring in (
            (state._d10, rings[_C]),
            (state._d60, rings[_C]),
            (state._dh14, rings[_H]),
            (state._dl14, rings[_L]),
        ):
            n = min(window.maxlen or 0, i + 1)
            window.extend(ring[slot, np.arange(i - n + 1, i + 1) & _M].tolist())
        state._x = [
            max(state._d10),
            min(state._d10),
            max(state._d60),
            min(state._d60),
            max(state._dh14),
            min(state._dl14),
        ]
        state._sums = self._sums[slot].tolist()
        state._rec = self._rec[slot].tolist()
        state._vx_run = int(self._vx_run[slot])
        state._anc = self._anc[slot].tolist()
        return state

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.slots

    def add(self, symbol: str, state: SymbolFeatures) -> int:
        """Take over a symbol from its per-event state (which must be `ready`); its slot."""
        if not ready(state):
            raise ValueError(f"{symbol}: {state.bars} bars, the bank needs {MACD_READY + 1}")
        self.remove(symbol)
        if not self._free:
            n = self._rings.shape[1]
            self._alloc(2 * n)
            self._free.extend(range(2 * n - 1, n - 1, -1))
        slot = self._free.pop()
        self.slots[symbol] = slot
        i = state.bars - 1
        rings = self._rings
        rings[:_H, slot] = [getattr(state, name) for name in _RING_ATTRS]
        rings[_H, slot] = 0.0
        rings[_L, slot] = math.inf
        n = len(state._dh14)
        at = np.arange(i - n + 1, i + 1) & _M
        rings[_H, slot, at] = list(state._dh14)
        rings[_L, slot, at] = list(state._dl14)
        self._i[slot] = i
        self.withheld[slot] = state.withheld
        self._vx_run[slot] = state._vx_run
        self._sums[slot] = state._sums
        self._rec[slot] = state._rec
        self._anc[slot] = state._anc
        return slot

    def remove(self, symbol: str) -> None:
        """Forget a symbol (its slot is reused)."""
        slot = self.slots.pop(symbol, None)
        if slot is not None:
            self._free.append(slot)

    def update(
        self,
        slots: Ints,
        open_: Floats,
        high: Floats,
        low: Floats,
        close: Floats,
        volume: Floats,
        vix: Floats,
        vix_is_proxy: npt.NDArray[np.bool_],
        regime: Ints,
    ) -> tuple[Floats, npt.NDArray[np.bool_]]:
        """Feed the next bar of each symbol in `slots` (distinct); return every symbol's feature
        row (n x features) and which rows are emitted (the others `SymbolFeatures.update` would
        have withheld: None). `vix` is NaN where unknown; `regime` an index into `REGIMES`, -1
        when undecided. Prices must be valid (the consumer's bars are); a VIX that is not a
        positive finite number raises `DataError` before anything changes, as `update` does.
        """
        known = ~np.isnan(vix)
        bad = known & ~((vix > 0.0) & (vix < math.inf))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            where = f"{int(self._i[slots[first]]) + 2} of this symbol"
            raise DataError(
                f"bar {where}: VIX {float(vix[first])!r} is not a positive finite number"
            )

        i = self._i[slots] + 1
        self._i[slots] = i
        k = i & _M
        rings = self._rings
        lc_ring, c_ring, r_ring, hl_ring = rings[_LC], rings[_C], rings[_R], rings[_HL]
        v_ring, vx_ring, lvx_ring = rings[_V], rings[_VX], rings[_LVX]

        n = len(slots)
        logs = log_each(np.concatenate([open_, high, low, close]))
        lo, lh, ll, lc = logs[:n], logs[n : 2 * n], logs[2 * n : 3 * n], logs[3 * n :]
        prev = (i - 1) & _M
        prev_c = c_ring[slots, prev]
        prev_lc = lc_ring[slots, prev]
        r = lc - prev_lc
        hl = lh - ll
        vx = np.where(known, vix, 0.0)
        lvx = np.zeros(n)
        if known.any():
            lvx[known] = log_each(vix[known])
        run = np.where(known, self._vx_run[slots] + 1, 0)
        self._vx_run[slots] = run
        for ring, value in (
            (lc_ring, lc),
            (c_ring, close),
            (r_ring, r),
            (hl_ring, hl),
            (v_ring, volume),
            (vx_ring, vx),
            (lvx_ring, lvx),
            (rings[_H], high),
            (rings[_L], low),
        ):
            ring[slots, k] = value

        # Running sums, as `update_row` adds them (same order of operations).
        s = self._sums[slots].T.copy()
        a = r_ring[slots, (i - 5) & _M]
        s[0] += r - a
        s[1] += r * r - a * a
        a = r_ring[slots, (i - 10) & _M]
        s[2] += r - a
        s[3] += r * r - a * a
        a = r_ring[slots, (i - 21) & _M]
        s[4] += r - a
        s[5] += r * r - a * a
        s[6] += r * r * r - a * a * a
        a = r_ring[slots, (i - 63) & _M]
        s[7] += r - a
        s[8] += r * r - a * a
        s[9] += r * r * r - a * a * a
        a = hl_ring[slots, (i - 21) & _M]
        s[10] += hl * hl - a * a
        a = c_ring[slots, (i - 50) & _M]
        s[13] += close - a
        a = c_ring[slots, (i - 200) & _M]
        s[14] += close - a

        # The 20-bar close and volume sums: deviations from the block's anchor.
        anc = self._anc[slots].T.copy()
        block = i % 20 == 0
        yc = np.where(block, 0.0, close - anc[0])
        yv = np.where(block, 0.0, volume - anc[1])
        old = (i - 20) & _M
        a = np.where(i >= 20, c_ring[slots, old] - anc[0], 0.0)
        b = np.where(i >= 20, v_ring[slots, old] - anc[1], 0.0)
        s[11] = np.where(block, s[11], s[11] + (yc - a))
        s[12] = np.where(block, s[12], s[12] + (yc * yc - a * a))
        s[15] = np.where(block, s[15], s[15] + (yv - b))
        s[16] = np.where(block, s[16], s[16] + (yv * yv - b * b))
        if block.any():
            self._reanchor(slots, i, block, s, anc, close, volume)
        s[17] += vx - vx_ring[slots, (i - 20) & _M]
        self._sums[slots] = s.T
        self._anc[slots] = anc.T

        # Rolling extremes over their windows (closes before a symbol's first bar don't count).
        back = i[:, None] - _BACK10
        w10 = c_ring[slots[:, None], back & _M]
        back = i[:, None] - _BACK60
        w60 = c_ring[slots[:, None], back & _M]
        max10, min10 = w10.max(axis=1), w10.min(axis=1)
        max60 = w60.max(axis=1)
        min60 = np.where(back >= 0, w60, math.inf).min(axis=1)
        back = (i[:, None] - _BACK14) & _M
        max_h14 = rings[_H][slots[:, None], back].max(axis=1)
        min_l14 = rings[_L][slots[:, None], back].min(axis=1)

        # Recursive averages (seeded: `ready` symbols only).
        diff = close - prev_c
        gain = np.where(diff > 0.0, diff, 0.0)
        loss = np.where(diff < 0.0, -diff, 0.0)
        tr = np.maximum(np.maximum(high - low, np.abs(high - prev_c)), np.abs(low - prev_c))
        q = self._rec[slots, :6].T.copy()
        e12 = q[0] = _E12B * q[0] + E12_A * close
        e26 = q[1] = _E26B * q[1] + E26_A * close
        macd = (e12 - e26) / close
        sig = q[2] = _SIGB * q[2] + SIG_A * macd
        g = q[3] = _RSIB * q[3] + RSI_A * gain
        dn = q[4] = _RSIB * q[4] + RSI_A * loss
        atr = q[5] = _ATRB * q[5] + ATR_A * tr
        self._rec[slots, :6] = q.T

        emitted = (i >= WARMUP) & (run >= VIX_RUN) & (regime >= 0)
        self.withheld[slots] += ~emitted

        with np.errstate(all="ignore"):
            out = np.empty((_N_FEATURES, n))
            m5, m10, m21, t21, m63, t63 = return_moments(s)
            pk, mc, ma20, bvar, ma50, ma200, mv, vm, vvar = level_moments(s, anc)
            flat21 = m21 > FLAT_VAR
            vol21 = np.where(flat21, np.sqrt(_V21 * m21), 0.0)
            bsd = np.where(bvar > FLAT_REL2 * ma20 * ma20, np.sqrt(bvar), 0.0)
            rng = max_h14 - min_l14
            hi_oc = np.where(lo > lc, lo, lc)
            lo_oc = np.where(lo < lc, lo, lc)
            flat63 = m63 > FLAT_VAR
            rs = g + dn
            out[0] = r
            out[1] = lc - lc_ring[slots, (i - 5) & _M]
            out[2] = lc - lc_ring[slots, (i - 10) & _M]
            out[3] = lc - lc_ring[slots, (i - 20) & _M]
            out[4] = lc - lc_ring[slots, (i - 60) & _M]
            out[5] = np.where(m5 > FLAT_VAR, np.sqrt(_V5 * m5), 0.0)
            out[6] = np.where(m10 > FLAT_VAR, np.sqrt(_V10 * m10), 0.0)
            out[7] = vol21
            out[8] = np.where(flat63, np.sqrt(_V63 * m63), 0.0)
            out[9] = np.where(pk > FLAT_VAR, np.sqrt(PARKINSON_FACTOR * pk), 0.0)
            out[10] = np.where(flat21, t21 / (m21 * np.sqrt(m21)), 0.0)
            out[11] = np.where(flat63, t63 / (m63 * np.sqrt(m63)), 0.0)
            out[12] = np.where(rs > 0.0, 100.0 * g / rs, 50.0)
            out[13] = macd
            out[14] = sig
            out[15] = macd - sig
            out[16] = np.where(rng > 0.0, (close - min_l14) / rng, 0.5)
            out[17] = np.where(bsd > 0.0, 0.5 + (yc - mc) / (4.0 * bsd), 0.5)
            out[18] = 4.0 * bsd / ma20
            out[19] = atr / close
            out[20] = hl
            out[21] = np.where(high > low, (close - low) / (high - low), 0.5)
            out[22] = lo - prev_lc
            out[23] = lc - lo
            out[24] = lh - hi_oc
            out[25] = lo_oc - ll
            out[26] = np.where(vvar > FLAT_REL2 * vm * vm, (yv - mv) / np.sqrt(vvar), 0.0)
            out[27] = close / max10 - 1.0
            out[28] = close / max60 - 1.0
            out[29] = close / min10 - 1.0
            out[30] = close / min60 - 1.0
            out[31] = close / ma20 - 1.0
            out[32] = close / ma50 - 1.0
            out[33] = close / ma200 - 1.0
            out[34] = ma20 / ma50 - 1.0
            out[35] = ma50 / ma200 - 1.0
            out[36] = vx
            out[37] = lvx - lvx_ring[slots, (i - 1) & _M]
            out[38] = lvx - lvx_ring[slots, (i - 5) & _M]
            out[39] = vx / (s[17] / 20) - 1.0
            out[40] = vx / 100.0 - vol21
            out[41] = np.where(vix_is_proxy, 1.0, 0.0)
            one_hot = out[_N_FEATURES - _N_REGIMES :]
            one_hot[:] = 0.0
            decided = np.flatnonzero(regime >= 0)
            one_hot[regime[decided], decided] = 1.0
        return out.T, emitted

    def _reanchor(
        self,
        slots: Ints,
        i: Ints,
        block: npt.NDArray[np.bool_],
        s: Floats,
        anc: Floats,
        close: Floats,
        volume: Floats,
    ) -> None:
        """`SymbolFeatures._reanchor` for the symbols starting a block of 20 bars."""
        rows = np.flatnonzero(block)
        at, ib = slots[rows], i[rows]
        ac = anc[0, rows] = close[rows]
        av = anc[1, rows] = volume[rows]
        c_ring, v_ring = self._rings[_C], self._rings[_V]
        s1 = np.zeros(len(rows))
        s2 = np.zeros(len(rows))
        t1 = np.zeros(len(rows))
        t2 = np.zeros(len(rows))
        for back in _BACK20:
            j = ib - back
            live = j >= 0  # before a symbol's first bar there is nothing to add
            y = np.where(live, c_ring[at, j & _M] - ac, 0.0)
            s1 = np.where(live, s1 + y, s1)
            s2 = np.where(live, s2 + y * y, s2)
            y = np.where(live, v_ring[at, j & _M] - av, 0.0)
            t1 = np.where(live, t1 + y, t1)
            t2 = np.where(live, t2 + y * y, t2)
        s[11, rows], s[12, rows], s[15, rows], s[16, rows] = s1, s2, t1, t2
