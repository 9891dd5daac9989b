"""The bank path of `Pipeline.process_batch`: a poll that spans many symbols runs through the
`FeatureBank`, a step of symbols per numpy pass (`BankBatch`), with the same rows as the
per-event path."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from daemon.domain import BAR_FIELDS, REGIMES, Bar, BarRow
from daemon.pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from daemon.pipeline.features.batch import log_each
from daemon.pipeline.labels import label_back, window_labels
from daemon.pipeline.output import Output, bar_row
from daemon.pipeline.regime import RegimeLabel, VixSource, decide_many, proxy_vix

if TYPE_CHECKING:
    from daemon.pipeline.engine import Pipeline, SymbolState

__all__ = ["BankBatch", "Columns", "bar_at"]

_VIX_SOURCES = ("vix", "proxy", "none")


class Columns(Protocol):
    """Valid bars column by column, in arrival order (`consumers.events.DecodedBatch`)."""

    symbols: list[str]
    ts: list[str]
    days: list[dt.date]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]


#: A poll runs in the bank when its bars average at least this many symbols per step (a step


def bar_at(bars: Columns, k: int) -> Bar:
    """The `k`-th bar of the columns as a `Bar`."""
    return Bar(
        bars.symbols[k],
        bars.days[k],
        bars.open[k],
        bars.high[k],
        bars.low[k],
        bars.close[k],
        bars.volume[k],
    )


class BankBatch:
    """One poll through the bank: bars in arrival order are sorted into per-symbol steps,
    each step runs as one numpy pass, and the rows come out in arrival order."""

    def __init__(self, pipeline: Pipeline, bars: Columns) -> None:
        self.p = pipeline
        self.bars = bars

    def run(self, out: Output) -> None:
        p, bars = self.p, self.bars
        rules = p.config.regime
        vix_at = p.regimes.vix.at
        stale = rules.vix_max_staleness_days
        symbols, days = bars.symbols, bars.days
        # Pass 1, in arrival order: VIX bars, bar-by-bar symbols, late bars; the bank's bars
        # are queued with their step (k-th bar of their symbol in this poll) and VIX reading.
        queued: list[int] = []  # positions in `bars`
        self._queued = queued
        step: list[int] = []
        slot: list[int] = []
        vix: list[float] = []
        order: list[tuple[int, Any]] = []  # (0, queue index) or (1, BarRow) or (2, queue index)
        seen: dict[str, int] = {}
        waitings: list[deque[str]] = []  # the symbol's waiting days, per queued bar
        touched: dict[str, SymbolState] = {}
        nan = math.nan
        vix_symbol, states = p._vix_symbol, p.symbols
        for k, symbol in enumerate(symbols):
            if symbol == vix_symbol:
                p._vix(bar_at(bars, k), bars.ts[k], out)
                continue
            state = states.get(symbol)
            if state is None and p.history is not None:
                p.restore(symbol, p.history(symbol))
                state = states.get(symbol)
            if state is None or state.slot is None:
                p.process(bar_at(bars, k), out)
                continue
            day = days[k]
            if day <= state.last_day:
                order.append(self._late(k, state, state.pending, out))
                continue
            state.last_day = day
            n = seen.get(symbol, 0)
            seen[symbol] = n + 1
            q = len(queued)
            state.pending = q
            touched[symbol] = state
            order.append((0, q))
            queued.append(k)
            step.append(n)
            slot.append(state.slot)
            waitings.append(state.waiting)
            reading = vix_at(day, stale)
            vix.append(nan if reading is None else reading)
        if not queued:
            for _, row in order:
                out.bars.append(row)
            return
        result = self._compute(queued, step, slot, vix)
        made = self._rows(order, queued, waitings, result, out)
        market = p._market_symbol
        for symbol, state in touched.items():
            assert state.pending is not None
            row = made[state.pending]
            state.last_row = BarRow.unchecked(*row)
            state.pending = None
            if symbol == market:
                out.market = RegimeLabel(row[7], row[8], cast(VixSource, row[9]))

    def _late(
        self, k: int, state: SymbolState, pending: int | None, out: Output
    ) -> tuple[int, Any]:
        """A bar at or before the symbol's last day: a repeat of the last bar (idempotent) or
        an out-of-order bar stored without a regime, as `Pipeline._late`."""
        bars = self.bars
        values = (bars.open[k], bars.high[k], bars.low[k], bars.close[k], bars.volume[k])
        if bars.days[k] == state.last_day:
            if pending is not None:
                j = self._queued[pending]
                last = (bars.open[j], bars.high[j], bars.low[j], bars.close[j], bars.volume[j])
                if values == last:
                    return (2, pending)
            else:
                row = state.last_row
                if values == (row.open, row.high, row.low, row.close, row.volume):
                    return (1, row)
        out.out_of_order += 1
        return (1, bar_row(bar_at(bars, k), bars.ts[k], None, None, "none"))

    def _compute(
        self, queued: list[int], step: list[int], slot: list[int], vix: list[float]
    ) -> dict[str, Any]:
        """Pass 2: regime, features and labels of the queued bars, a step at a time."""
        p, bars = self.p, self.bars
        rules = p.config.regime
        pos = np.array(queued)
        o = np.array(bars.open)[pos]
        h = np.array(bars.high)[pos]
        lo = np.array(bars.low)[pos]
        c = np.array(bars.close)[pos]
        v = np.array(bars.volume)[pos]
        real_vix = np.array(vix)
        slots = np.array(slot, dtype=np.int64)
        steps = np.array(step)
        n = len(pos)
        regime = np.empty(n, dtype=np.int64)
        reading = np.empty(n)
        source = np.empty(n, dtype=np.int64)
        rows = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
        emitted = np.empty(n, dtype=bool)
        label = np.full(n, -1, dtype=np.int64)
        lookback = rules.price_crash_lookback_bars
        window = rules.vix_proxy_window_bars
        target = p.config.label
        horizon = target.horizon_bars
        threshold = target.threshold
        label_closes = label_back(target)
        bank = p.bank
        by_step = np.argsort(steps, kind="stable")
        bounds = np.searchsorted(steps[by_step], np.arange(int(steps.max()) + 2))
        for first, end in itertools.pairwise(bounds.tolist()):
            at = by_step[first:end]
            if not len(at):
                continue
            s_slots, s_close = slots[at], c[at]
            index = bank._i[s_slots] + 1
            back = bank.closes(s_slots, max(lookback, window, label_closes))
            with np.errstate(invalid="ignore"):
                prior_max = np.fmax.reduce(back[:, :lookback], axis=1)
            x = real_vix[at].copy()
            src = np.where(np.isnan(x), 2, 0)
            need = np.flatnonzero(np.isnan(x) & (index >= window))
            for j in need.tolist():
                closes = [*back[j, :window][::-1].tolist(), float(s_close[j])]
                returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
                x[j] = proxy_vix(rules, returns)
                src[j] = 1
            codes = decide_many(rules, s_slots, index, s_close, prior_max, x, p.episodes)
            matured = np.flatnonzero(index >= horizon)
            if len(matured) and target.target == "direction":
                old = back[matured, horizon - 1]
                ratio = s_close[matured] / old
                label[at[matured]] = log_each(ratio) > threshold
            elif len(matured):
                label[at[matured]] = _NO_LABEL
                known = matured[index[matured] >= label_closes]
                ahead = np.column_stack([back[known, :label_closes][:, ::-1], s_close[known]])
                label[at[known]] = window_labels(target, ahead)
            features, ok = bank.update(
                s_slots, o[at], h[at], lo[at], s_close, v[at], x, src == 1, codes
            )
            with np.errstate(over="ignore"):
                rows[at] = features
            emitted[at] = ok
            regime[at], reading[at], source[at] = codes, x, src
        decided = regime[regime >= 0]
        return {
            "counts": np.bincount(decided, minlength=len(REGIMES)).tolist(),
            "regime": regime.tolist(),
            "vix": reading.tolist(),
            "source": source.tolist(),
            "rows": rows,
            "emitted": emitted.tolist(),
            "label": label.tolist(),
        }

    def _rows(
        self,
        order: list[tuple[int, Any]],
        queued: list[int],
        waitings: list[deque[str]],
        result: dict[str, Any],
        out: Output,
    ) -> list[tuple[Any, ...]]:
        """Pass 3, in arrival order: bar, sample and label rows, as statement parameters; the
        queued bars' rows, by queue index."""
        p, bars = self.p, self.bars
        source = p.source
        weights = p.weights
        regimes, readings, sources = result["regime"], result["vix"], result["source"]
        emitted, labels = result["emitted"], result["label"]
        matrix = result["rows"]
        width = matrix.shape[1] * 4
        packed = matrix.astype("<f4", copy=False).tobytes()
        made: list[tuple[Any, ...]] = []
        add_made = made.append
        symbols, tss = bars.symbols, bars.ts
        o, h, lo, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
        block = out.block
        add_bar = block.bars.append
        label_rows = block.labels
        samples: list[list[Any]] = []
        fresh: dict[tuple[str, str], list[Any]] = {}
        chosen: list[int] = []
        settled = out.settled
        withheld = 0
        version = FEATURE_VERSION
        names, vix_sources = _REGIME_NAMES, _VIX_SOURCES
        for kind, ref in order:
            if kind == 1:
                add_bar(BAR_FIELDS(ref))
                continue
            if kind == 2:
                add_bar(made[ref])
                continue
            k = queued[ref]
            symbol, ts = symbols[k], tss[k]
            regime = names[regimes[ref]]
            reading = readings[ref]
            row = (
                symbol,
                ts,
                o[k],
                h[k],
                lo[k],
                c[k],
                v[k],
                regime,
                None if reading != reading else reading,
                vix_sources[sources[ref]],
            )
            add_made(row)
            add_bar(row)
            if regime is not None and emitted[ref]:
                entry = [
                    source,
                    symbol,
                    ts,
                    regime,
                    weights[regime],
                    None,
                    None,
                    version,
                    packed[ref * width : (ref + 1) * width],
                ]
                samples.append(entry)
                fresh[(symbol, ts)] = entry
                chosen.append(ref)
            else:
                withheld += 1
            waiting = waitings[ref]
            waiting.append(ts)
            label = labels[ref]
            if label == _NO_LABEL:
                waiting.popleft()
            elif label >= 0:
                target = waiting.popleft()
                matured = fresh.get((symbol, target))
                if matured is None:
                    label_rows.append((source, symbol, target, label))
                else:
                    matured[5] = label
                    settled.append((symbol, target, label))
        out.withheld += withheld
        counts = result["counts"]
        for code, name in enumerate(REGIMES):
            if counts[code]:
                out.labeled[name] += counts[code]
        block.samples += map(tuple, samples)
        if chosen:
            out.block_features.append(matrix[chosen])
        return made


#: A matured bar whose label cannot be known (a `volatility` bar without its previous window).
_NO_LABEL = -2

_REGIME_NAMES: dict[int, str | None] = {**dict(enumerate(REGIMES)), -1: None}
