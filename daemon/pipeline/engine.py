"""From bars to stored rows: regime label, feature row, delayed label, in one place.

`Pipeline` is the per-event path the consumer runs for every valid bar; `history_rows` is the
batch path over a whole history of one symbol (the rare-event archive, checks). Both produce the
same `BarRow`s, `SampleRow`s and labels: tests/pipeline/test_pipeline.py proves it on the bundled
history. This module keeps the per-symbol state; a poll over many symbols runs through the bank
(bank_batch.py), and the rows come out in an `Output` (output.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from daemon.config import Config
from daemon.domain import Bar, BarRow, LabelUpdate, SampleRow, Source
from daemon.pipeline.bank_batch import BankBatch, Columns, bar_at
from daemon.pipeline.features import (
    FEATURE_VERSION,
    SymbolFeatures,
    features_from_labels,
    restore_features,
)
from daemon.pipeline.features.bank import FeatureBank, ready
from daemon.pipeline.features.defs import RING
from daemon.pipeline.labels import SymbolLabels, future_labels, label_back
from daemon.pipeline.output import Output, bar_row, float32_row, settle
from daemon.pipeline.regime import (
    Episodes,
    RegimeLabeler,
    SymbolRegime,
    label_history,
)

__all__ = [
    "BANK_MIN_SYMBOLS",
    "Columns",
    "History",
    "Output",
    "Pipeline",
    "SymbolState",
    "history_rows",
]


@dataclass
class SymbolState:
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


#: per-event path's plain Python.
BANK_MIN_SYMBOLS = 16


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
        self.symbols: dict[str, SymbolState] = {}
        self.vix_last: dt.date | None = None
        self.restored = 0
        self._vix_symbol = config.regime.vix_symbol
        self._market_symbol = config.regime.market_symbol
        rules = config.regime
        #: The bank needs every look-back inside its ring buffers.
        self.bank_enabled = (
            rules.price_crash_lookback_bars < RING
            and rules.vix_proxy_window_bars < RING
            and label_back(config.label) < RING
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
        back = label_back(self.config.label) + 1
        h = self.config.label.horizon_bars
        labels.restore(
            [day.strftime("%Y-%m-%d") for day in days[-h:]], closes[-back:].tolist()
        )
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
        self.symbols[symbol] = SymbolState(features, labels, days[-1].date(), row)
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
        state.waiting = deque(state.labels.waiting)

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
        labels.waiting.extend(state.waiting)
        labels.closes.extend(closes)
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
                self.process(bar_at(bars, k), out)
            settle(out)
            return
        BankBatch(self, bars).run(out)
        # Symbols that finished their warm-up bar by bar take the bank from the next poll.
        for symbol in counts:
            state = self.symbols.get(symbol)
            if state is not None and state.slot is None and ready(state.features):
                self._promote(symbol)
        settle(out)

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
        row = bar_row(bar, ts, regime, vix, label.vix_source)
        out.bars.append(row)
        if state is None:
            state = SymbolState(SymbolFeatures(), SymbolLabels(self.config.label), day, row)
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
                    float32_row(features),
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
        out.bars.append(bar_row(bar, ts, None, bar.close, "vix"))

    def _late(self, bar: Bar, ts: str, state: SymbolState, out: Output) -> None:
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
        out.bars.append(bar_row(bar, ts, None, None, "none"))


def _names(column: pd.Series[Any]) -> list[str | None]:
    """A column of names (regimes, VIX sources) as str, None where missing; read through the
    categorical codes when it has them (`Store.recent_bars`), which is ten times faster."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = [str(c) for c in column.cat.categories]
        return [names[k] if k >= 0 else None for k in column.cat.codes.tolist()]
    return [None if pd.isna(v) else str(v) for v in column.tolist()]


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
