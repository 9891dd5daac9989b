"""From bars to stored rows: regime label, feature row, delayed label, in one place.

`Pipeline` is the per-event path the consumer runs for every valid bar; `history_rows` is the
batch path over a whole history of one symbol (the rare-event archive, checks). Both produce the
same `BarRow`s, `SampleRow`s and labels: tests/pipeline/test_pipeline.py proves it on the bundled
history.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.domain import BAR_FIELDS, REGIMES, Bar, BarRow, LabelUpdate, RowBlock, SampleRow, Source
from daemon.pipeline.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    SymbolFeatures,
    features_from_labels,
    restore_features,
)
from daemon.pipeline.features.bank import FeatureBank, ready
from daemon.pipeline.features.batch import log_each
from daemon.pipeline.features.defs import RING
from daemon.pipeline.labels import SymbolLabels, future_labels
from daemon.pipeline.regime import (
    Episodes,
    RegimeLabel,
    RegimeLabeler,
    SymbolRegime,
    VixSource,
    decide_many,
    label_history,
    proxy_vix,
)


@dataclass
class Output:
    """What a batch of bars turns into: rows to write and what to count."""

    bars: list[BarRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    labels: list[LabelUpdate] = field(default_factory=list)
    #: The bank's rows, as statement parameters; `block_features` holds its samples' vectors
    #: (float32 matrices, in the order of `block.samples`).
    block: RowBlock = field(default_factory=RowBlock)
    block_features: list[npt.NDArray[np.float32]] = field(default_factory=list)
    #: (symbol, ts, label) of the labels that matured for samples of this same batch: set on
    #: those samples, so the store has nothing to update (`labels` and `block.labels` hold the
    #: labels of earlier batches' samples).
    settled: list[tuple[str, str, int]] = field(default_factory=list)
    labeled: Counter[str] = field(default_factory=Counter)
    withheld: int = 0
    out_of_order: int = 0
    market: RegimeLabel | None = None

    @property
    def bar_count(self) -> int:
        return len(self.bars) + len(self.block.bars)

    def all_bars(self) -> list[BarRow]:
        """Every bar row, the block's as objects too."""
        return [*self.bars, *self.block.bar_rows()]

    def all_samples(self) -> list[SampleRow]:
        """Every sample row, the block's as objects too."""
        return [*self.samples, *self.block.sample_rows()]

    def all_labels(self) -> list[LabelUpdate]:
        """Every label update for the store, the block's as objects too."""
        return [*self.labels, *self.block.label_updates()]


@dataclass
class _Symbol:
    """One symbol's state: in the per-event objects, or (`slot` set) in the pipeline's
    `FeatureBank` plus `waiting` (the days whose label is still to come)."""

    features: SymbolFeatures
    labels: SymbolLabels
    last_day: dt.date
    last_row: BarRow
    slot: int | None = None
    waiting: deque[str] = field(default_factory=deque)
    #: Within a bank poll: the queue index of this symbol's latest bar.
    pending: int | None = None


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
#: being one bar of each symbol): below it, numpy's per-call overhead costs more than the
#: per-event path's plain Python.
BANK_MIN_SYMBOLS = 16

_VIX_SOURCES = ("vix", "proxy", "none")


_OHLCV = ("open", "high", "low", "close", "volume")

#: Stored bars of one symbol, oldest first (columns as `BarRow`, `ts` a datetime64 column).
History = Callable[[str], pd.DataFrame]


class Pipeline:
    """Per-event path: per-symbol regime, feature and label state for the live stream.

    With a `history` loader, the state of a symbol seen for the first time is rebuilt from its
    stored bars (after a restart, or when a partition moved here from another daemon), so no
    Kafka replay is needed.
    """

    def __init__(self, config: Config, history: History | None = None) -> None:
        self.config = config
        self.source: Source = "live"
        self.history = history
        self.regimes = RegimeLabeler(config.regime)
        self.weights = {r: w + 0.0 for r, w in config.weights.regime.as_dict().items()}
        self.symbols: dict[str, _Symbol] = {}
        self.vix_last: dt.date | None = None
        self.restored = 0
        self._vix_symbol = config.regime.vix_symbol
        self._market_symbol = config.regime.market_symbol
        rules = config.regime
        #: The bank needs every look-back inside its ring buffers.
        self.bank_enabled = (
            rules.price_crash_lookback_bars < RING
            and rules.vix_proxy_window_bars < RING
            and config.label.horizon_bars < RING
        )
        self.bank = FeatureBank()
        self.episodes = Episodes.empty(self.bank.capacity)

    def forget(self, symbol: str) -> None:
        """Drop a symbol's state; the next bar rebuilds it from the store."""
        state = self.symbols.pop(symbol, None)
        if state is not None and state.slot is not None:
            self.bank.remove(symbol)
        self.regimes.symbols.pop(symbol, None)

    def load_vix(self, vix: pd.DataFrame) -> None:
        """Add stored VIX bars (columns ts, close) to the labeler's VIX history."""
        for ts, close in zip(pd.DatetimeIndex(vix["ts"]), vix["close"], strict=True):
            day = ts.date()
            self.regimes.add_vix(day, float(close))
            if self.vix_last is None or day > self.vix_last:
                self.vix_last = day

    def restore(self, symbol: str, stored: pd.DataFrame) -> None:
        """Rebuild one symbol's state from its stored bars (oldest first): the same state as if
        those bars had just been processed, regimes taken as stored."""
        self.forget(symbol)
        if stored.empty:
            return
        days = pd.DatetimeIndex(stored["ts"])
        ohlcv = [stored[c].to_numpy(dtype=float) for c in _OHLCV]
        closes = ohlcv[3]
        regimes = _names(stored["regime"])
        vix = stored["vix"].to_numpy(dtype=float)
        sources = _names(stored["vix_source"])
        self.regimes.restore(symbol, closes.tolist(), regimes)
        bars = pd.DataFrame(dict(zip(_OHLCV, ohlcv, strict=True)), index=days)
        features = restore_features(bars, vix, [s == "proxy" for s in sources], regimes)
        labels = SymbolLabels(self.config.label)
        h = self.config.label.horizon_bars
        for day, close in zip(days[-h:], closes[-h:].tolist(), strict=True):
            labels.waiting.append((day.strftime("%Y-%m-%d"), close))
        o, hi, lo, c, v = (float(column[-1]) for column in ohlcv)
        row = BarRow(
            symbol,
            days[-1].strftime("%Y-%m-%d"),
            o,
            hi,
            lo,
            c,
            v,
            regimes[-1],
            None if math.isnan(vix[-1]) else float(vix[-1]),
            str(sources[-1]),
        )
        self.symbols[symbol] = _Symbol(features, labels, days[-1].date(), row)
        self.restored += 1
        # A restored symbol joins the bank at the end of its first poll (`process_batch`),
        # like any other: a restart pays only for the state itself.

    # -- the bank: many symbols per numpy step -------------------------------------------------

    def _promote(self, symbol: str) -> None:
        """Move a symbol's state from its per-event objects into the bank."""
        state = self.symbols[symbol]
        slot = self.bank.add(symbol, state.features)
        self.episodes.grow(self.bank.capacity)
        regime = self.regimes.symbols.pop(symbol, None)
        self.episodes.set(slot, None if regime is None else regime.episode)
        state.slot = slot
        state.waiting = deque(ts for ts, _ in state.labels.waiting)

    def _demote(self, symbol: str) -> None:
        """Move a symbol's state from the bank back into per-event objects."""
        state = self.symbols[symbol]
        slot = state.slot
        assert slot is not None
        features = self.bank.export(slot)
        i = features.bars - 1
        rules = self.config.regime
        regime = SymbolRegime(rules)
        regime.index = i
        closes = self.bank.closes(np.array([slot]), min(i + 1, RING))[0][::-1].tolist()
        regime.last_close = closes[-1]
        regime.closes.extend(closes[-rules.price_crash_lookback_bars :])
        tail = closes[-(rules.vix_proxy_window_bars + 1) :]
        regime.returns.extend(math.log(b / a) for a, b in itertools.pairwise(tail))
        regime.episode = self.episodes.get(slot)
        self.regimes.symbols[symbol] = regime
        labels = SymbolLabels(self.config.label)
        h = len(state.waiting)
        labels.waiting.extend(zip(state.waiting, closes[len(closes) - h :], strict=True))
        self.bank.remove(symbol)
        state.features, state.labels, state.slot = features, labels, None
        state.waiting = deque()

    def process_batch(self, bars: Columns, out: Output) -> None:
        """`process` every bar of a poll, in order, with the same rows as a result. When the
        poll spans many symbols (`BANK_MIN_SYMBOLS` per step on average), the symbols whose
        averages are seeded run in the bank, a step of them per numpy pass; otherwise, and for
        new symbols' first bars, bar by bar."""
        symbols = bars.symbols
        counts = Counter(symbols)
        counts.pop(self._vix_symbol, None)
        steps = max(counts.values(), default=0)
        use_bank = (
            self.bank_enabled and steps > 0 and sum(counts.values()) >= BANK_MIN_SYMBOLS * steps
        )
        if not use_bank:
            for k in range(len(symbols)):
                self.process(_bar_at(bars, k), out)
            _settle(out)
            return
        _BankBatch(self, bars).run(out)
        # Symbols that finished their warm-up bar by bar take the bank from the next poll.
        for symbol in counts:
            state = self.symbols.get(symbol)
            if state is not None and state.slot is None and ready(state.features):
                self._promote(symbol)
        _settle(out)

    def process(self, bar: Bar, out: Output) -> None:
        """Turn one bar into rows in `out`. Bars must come in time order per symbol; an older
        (or repeated, or corrected same-day) bar is stored as given but not fed to the state.

        `bar` must be valid (as `consumers.events.decode_event` returns them): the rows are
        built without the store's checks, which would cost more than the rest of the work."""
        symbol, day, close = bar.symbol, bar.day, bar.close
        ts = day.isoformat()
        if symbol == self._vix_symbol:
            self._vix(bar, ts, out)
            return
        state = self.symbols.get(symbol)
        if state is None and self.history is not None:
            self.restore(symbol, self.history(symbol))
            state = self.symbols.get(symbol)
        if state is not None and state.slot is not None:
            self._demote(symbol)
        if state is not None and day <= state.last_day:
            self._late(bar, ts, state, out)
            return
        label = self.regimes.label(symbol, day, close)
        regime, vix = label.regime, label.vix
        row = _bar_row(bar, ts, regime, vix, label.vix_source)
        out.bars.append(row)
        if state is None:
            state = _Symbol(SymbolFeatures(), SymbolLabels(self.config.label), day, row)
            self.symbols[symbol] = state
        else:
            state.last_day, state.last_row = day, row
        if regime is not None:
            out.labeled[regime] += 1
        if symbol == self._market_symbol:
            out.market = label
        features = state.features.update_row(
            bar.open,
            bar.high,
            bar.low,
            close,
            bar.volume,
            vix,
            label.vix_source == "proxy",
            regime,
        )
        if features is None or regime is None:
            out.withheld += 1
        else:
            out.samples.append(
                SampleRow.unchecked(
                    symbol,
                    ts,
                    self.source,
                    regime,
                    self.weights[regime],
                    None,
                    _float32(features),
                    FEATURE_VERSION,
                )
            )
        matured = state.labels.update(ts, close)
        if matured is not None:
            out.labels.append(LabelUpdate.unchecked(symbol, matured.ts, self.source, matured.label))

    def _vix(self, bar: Bar, ts: str, out: Output) -> None:
        if self.vix_last is not None and bar.day < self.vix_last:
            out.out_of_order += 1
        else:
            self.vix_last = bar.day
        self.regimes.add_vix(bar.day, bar.close)
        out.bars.append(_bar_row(bar, ts, None, bar.close, "vix"))

    def _late(self, bar: Bar, ts: str, state: _Symbol, out: Output) -> None:
        last = state.last_row
        same = (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            last.open,
            last.high,
            last.low,
            last.close,
            last.volume,
        )
        if bar.day == state.last_day and same:
            out.bars.append(last)  # a repeat of the last bar: idempotent
            return
        out.out_of_order += 1
        out.bars.append(_bar_row(bar, ts, None, None, "none"))


def _bar_at(bars: Columns, k: int) -> Bar:
    return Bar(
        bars.symbols[k],
        bars.days[k],
        bars.open[k],
        bars.high[k],
        bars.low[k],
        bars.close[k],
        bars.volume[k],
    )


def _settle(out: Output) -> None:
    """Set the labels that matured for samples of this same batch on those samples, so the
    store inserts them labelled instead of updating them afterwards (`Output.settled`)."""
    if not out.labels or not out.samples:
        return
    fresh = {(s.symbol, s.ts, s.source): s for s in out.samples}
    later = []
    for update in out.labels:
        sample = fresh.get((update.symbol, update.ts, update.source))
        if sample is None:
            later.append(update)
        else:
            # A row this batch built and nothing else has seen yet: set, not copied.
            sample.__dict__["label"] = update.label
            if update.source == "live":
                out.settled.append((update.symbol, update.ts, update.label))
    out.labels = later


class _BankBatch:
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
        touched: dict[str, _Symbol] = {}
        nan = math.nan
        vix_symbol, states = p._vix_symbol, p.symbols
        for k, symbol in enumerate(symbols):
            if symbol == vix_symbol:
                p._vix(_bar_at(bars, k), bars.ts[k], out)
                continue
            state = states.get(symbol)
            if state is None and p.history is not None:
                p.restore(symbol, p.history(symbol))
                state = states.get(symbol)
            if state is None or state.slot is None:
                p.process(_bar_at(bars, k), out)
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

    def _late(self, k: int, state: _Symbol, pending: int | None, out: Output) -> tuple[int, Any]:
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
        return (1, _bar_row(_bar_at(bars, k), bars.ts[k], None, None, "none"))

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
        horizon = p.config.label.horizon_bars
        threshold = p.config.label.threshold
        bank = p.bank
        by_step = np.argsort(steps, kind="stable")
        bounds = np.searchsorted(steps[by_step], np.arange(int(steps.max()) + 2))
        for first, end in itertools.pairwise(bounds.tolist()):
            at = by_step[first:end]
            if not len(at):
                continue
            s_slots, s_close = slots[at], c[at]
            index = bank._i[s_slots] + 1
            back = bank.closes(s_slots, max(lookback, window, horizon))
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
            if len(matured):
                old = back[matured, horizon - 1]
                ratio = s_close[matured] / old
                label[at[matured]] = log_each(ratio) > threshold
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
            if label >= 0:
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


_REGIME_NAMES: dict[int, str | None] = {**dict(enumerate(REGIMES)), -1: None}


def _names(column: pd.Series[Any]) -> list[str | None]:
    """A column of names (regimes, VIX sources) as str, None where missing; read through the
    categorical codes when it has them (`Store.recent_bars`), which is ten times faster."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = [str(c) for c in column.cat.categories]
        return [names[k] if k >= 0 else None for k in column.cat.codes.tolist()]
    return [None if pd.isna(v) else str(v) for v in column.tolist()]


def _bar_row(bar: Bar, ts: str, regime: str | None, vix: float | None, source: str) -> BarRow:
    return BarRow.unchecked(
        bar.symbol, ts, bar.open, bar.high, bar.low, bar.close, bar.volume, regime, vix, source
    )


_pack_float32 = struct.Struct(f"<{len(FEATURE_NAMES)}f").pack


def _float32(row: list[float]) -> npt.NDArray[np.float32]:
    """A feature row as the read-only float32 vector a `SampleRow` holds, rounded exactly as
    `SampleRow` rounds (a C cast to float)."""
    try:
        return np.frombuffer(_pack_float32(*row), dtype="<f4")  # bytes: read-only
    except OverflowError:  # a value beyond float32: numpy makes it infinite, as SampleRow does
        vector = np.array(np.array(row, dtype=np.float64), dtype=np.float32)
        vector.flags.writeable = False
        return vector


def history_rows(
    config: Config,
    symbol: str,
    bars: pd.DataFrame,
    vix: pd.Series | None,
    source: Source = "live",
    event: str | None = None,
) -> tuple[list[BarRow], list[SampleRow]]:
    """Batch path: the bar and sample rows of a whole daily history of one symbol, labels
    filled in where the future bar is in the history (the same rows `Pipeline` produces once
    every label has matured)."""
    labels = label_history(config.regime, bars["close"], vix)
    features = features_from_labels(bars, labels)
    future = future_labels(config.label, bars["close"])
    weights = config.weights.regime.as_dict()
    days = [d.strftime("%Y-%m-%d") for d in pd.DatetimeIndex(bars.index)]
    cols = [bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")]
    bar_rows = [
        BarRow(
            symbol,
            ts,
            float(o),
            float(h),
            float(lo),
            float(c),
            float(v),
            regime,
            None if math.isnan(x) else float(x),
            str(src),
        )
        for ts, o, h, lo, c, v, regime, x, src in zip(
            days,
            *cols,
            labels["regime"],
            labels["vix"].to_numpy(dtype=float),
            labels["vix_source"],
            strict=True,
        )
    ]
    position = {d: i for i, d in enumerate(pd.DatetimeIndex(bars.index))}
    matrix = features.to_numpy(dtype=np.float64)
    samples = []
    for k, day in enumerate(pd.DatetimeIndex(features.index)):
        i = position[day]
        regime = labels["regime"].iloc[i]
        label = future.iloc[i]
        samples.append(
            SampleRow(
                symbol=symbol,
                ts=days[i],
                source=source,
                regime=regime,
                weight=weights[regime],
                label=None if pd.isna(label) else int(label),
                features=matrix[k],
                feature_version=FEATURE_VERSION,
                event=event,
            )
        )
    return bar_rows, samples
