"""The per-poll ingest step: a poll's valid bars -> pipeline -> the champion's scores -> one
store transaction with the poll's offsets -> metrics.

The Kafka side (`consumers.kafka_source.MarketDataConsumer`) polls, decodes, dead-letters and
commits offsets; it hands every poll to `Ingest` (its `IngestStep`) and commits a poll's
offsets to Kafka only once `Ingest` reports the poll's `Batch` stored. With a writer process
(`store.writer_process`) one batch is in flight: while the child writes batch N, this step runs
the pipeline on batch N+1, then waits for N before it hands over N+1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.kafka_source import MarketDataConsumer
from consumers.step import Poll, Stored
from daemon.config import Config
from daemon.domain import Batch, OutboxRow, PredictionRow
from daemon.monitor.live import LiveScorer, labels_of
from daemon.monitor.metrics import Metrics
from daemon.monitor.regime_alerts import RegimeChangeAlerts, market_bars
from daemon.pipeline.engine import Output, Pipeline
from daemon.pipeline.records import prediction_records, regime_records
from daemon.store.sqlite import BatchResult, Store
from daemon.store.writer import StoreWriter, write

__all__ = ["LAST_EVENT_COUNTER", "RESTORE_BARS", "Ingest", "ingest_consumer"]

#: Stored bars per symbol that rebuild its state (covers the 200-bar windows and lets the
#: recursive averages converge far below float precision; and the closes of every pending label,
#: at most label.volatility_window + label.horizon_bars + 1 = 505).
RESTORE_BARS = 1000
#: The store counters `last_event_unix_seconds.<partition>` hold the wall time (whole seconds
#: since the epoch) when the newest record of each partition was consumed: each batch adds the
#: seconds since the partition's last one, in the batch's own transaction, so the value
#: survives a restart (`Ingest.show_freshness`). Per partition, because a partition has one
#: consumer at a time: with several daemons on one store each adds only to its own partitions'
#: counters, and re-reads a partition's counter when it is assigned.
LAST_EVENT_COUNTER = "last_event_unix_seconds"


@dataclass(frozen=True)
class _Pending:
    """A batch handed to the store, and what to do once it is there."""

    poll: Poll
    out: Output
    predictions: int
    scored: Counter[str]
    #: Wall time when the poll's records were consumed (None: the poll had none).
    consumed_at: float | None


class Ingest:
    """The daemon's `IngestStep`: see the module docstring."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        pipeline: Pipeline | None = None,
        scorer: LiveScorer | None = None,
        on_outbox: Callable[[int], None] | None = None,
        regime_alerts: RegimeChangeAlerts | None = None,
    ) -> None:
        self.config = config
        #: Told how many output records each committed batch put in the outbox.
        self.on_outbox = on_outbox
        #: Told the market symbol's stored bars, to alert on entering a watched regime.
        self.regime_alerts = regime_alerts
        self.store = store
        self.metrics = metrics
        self.scorer = scorer
        self.pipeline = pipeline or Pipeline(config, history=self._history)
        #: Writes batches in a child process (`daemon.store.writer`); None: in this thread.
        self.writer: StoreWriter | None = None
        self._in_flight: _Pending | None = None
        #: Whether a bar of the market symbol arrived (the service warns when none does).
        self.market_seen = False
        #: Partition -> its `LAST_EVENT_COUNTER` as the batches handed to the store leave it.
        self._event_seconds: dict[int, int] = {}

    def _history(self, symbol: str) -> Any:
        return self.store.recent_bars(symbol, RESTORE_BARS)

    def open(self) -> None:
        # PostgreSQL writes a batch in its own server process: no child needed for overlap.
        if self.config.store.writer_process and not self.config.store.url and self.writer is None:
            self.writer = StoreWriter(
                self.store.path, busy_timeout_ms=self.config.store.busy_timeout_ms
            )

    def close(self) -> None:
        writer, self.writer, self._in_flight = self.writer, None, None
        if writer is not None:
            writer.close()  # after the batch in flight, committed or rolled back

    def resume(self) -> dict[int, int]:
        self.pipeline.load_vix(self.store.bars(symbol=self.config.regime.vix_symbol))
        self.show_freshness()
        if self.regime_alerts is not None:
            self.regime_alerts.restore(self.store)
        return self.store.offsets(self.config.kafka.topic)

    def _shared_vix(self) -> None:
        """On a shared store the VIX partition may be another daemon's: take the VIX bars
        stored since the latest one this daemon knows, so its bars are labelled with the
        latest stored VIX whoever consumed it (one indexed read per poll)."""
        since = self.pipeline.vix_last
        stored = self.store.bars(symbol=self.config.regime.vix_symbol, since=since)
        if len(stored):
            self.pipeline.load_vix(stored)

    def forget(self, symbols: list[str]) -> None:
        for symbol in symbols:
            self.pipeline.forget(symbol)

    def idle(self) -> None:
        if self.scorer is not None and self.scorer.refresh():
            self.show_model()  # a champion promoted while no bars arrive

    def write(self, poll: Poll) -> Stored | None:
        out = Output()
        if poll.bars is not None:
            if self.config.store.url:
                self._shared_vix()
            self.pipeline.process_batch(poll.bars, out)
        predictions: list[Any] = []
        scored: Counter[str] = Counter()
        if self.scorer is not None:
            if self.scorer.refresh():
                self.show_model()
            predictions = self.scorer.score_output(out)
            scored = self.scorer.matured(labels_of(out))
        counters = {
            "events_stored": poll.valid,
            "rejected_events": sum(poll.rejected.values()),
            "bars_out_of_order": out.out_of_order,
        }
        if poll.dead_letters:
            counters["dead_letters_parked"] = len(poll.dead_letters)
        consumed_at = None
        if poll.valid or poll.rejected:
            consumed_at = time.time()
            for _, partition in poll.offsets:
                known = self._event_seconds.get(partition, 0)
                seconds = max(int(consumed_at), known)
                counters[f"{LAST_EVENT_COUNTER}.{partition}"] = seconds - known
                self._event_seconds[partition] = seconds
        batch = Batch(
            offsets=poll.offsets,
            bars=out.bars,
            samples=out.samples,
            labels=out.labels,
            block=out.block,
            predictions=predictions,
            dead_letters=poll.dead_letters,
            counters=counters,
            outbox=self._records(out, predictions),
        )
        pending = _Pending(poll, out, len(predictions), scored, consumed_at)
        stored = self.settle()  # the previous batch: stored, then acted on
        if self.writer is None:
            return self._stored(pending, write(self.store, batch))
        self.writer.submit(batch)
        self._in_flight = pending
        return stored

    def _records(self, out: Output, predictions: list[PredictionRow]) -> list[OutboxRow]:
        """The batch's records for the output topics that are on (docs/outputs.md)."""
        o = self.config.outputs
        records = []
        if o.regimes_topic:
            records = regime_records(o.regimes_topic, out.bars, out.block.bars)
        if o.predictions_topic and predictions:
            horizon = self.config.label.horizon_bars
            records += prediction_records(o.predictions_topic, predictions, horizon)
        return records

    def settle(self) -> Stored | None:
        pending, self._in_flight = self._in_flight, None
        if pending is None or self.writer is None:
            return None
        return self._stored(pending, self.writer.result())

    def _stored(self, pending: _Pending, result: BatchResult) -> Stored:
        """A batch is committed to the store: the metrics may now count it."""
        out, m = pending.out, self.metrics
        for reason, n in pending.poll.rejected.items():
            m.events_rejected.labels(reason=reason).inc(n)
        for regime, n in out.labeled.items():
            m.bars_labeled.labels(regime=regime).inc(n)
        m.bars_out_of_order.inc(out.out_of_order)
        m.bars_corrected.inc(result.bars_corrected)
        m.rows_withheld.inc(out.withheld)
        m.batches_committed.inc()
        if self.on_outbox is not None:
            self.on_outbox(result.outbox_written)
        if out.market is not None:
            self.market_seen = True
            m.set_market_regime(out.market.regime)
            m.vix_proxy_in_use.set(1 if out.market.vix_source == "proxy" else 0)
            if self.regime_alerts is not None:
                self.regime_alerts.observe(market_bars(out, self.config.regime.market_symbol))
        m.dead_letters_parked.inc(len(pending.poll.dead_letters))
        bars = pending.poll.bars
        m.observe_freshness(pending.consumed_at, max(bars.ts) if bars else None)
        if self.scorer is not None:
            m.predictions_made.inc(pending.predictions)
            if pending.scored:
                m.observe_live(self.scorer.live_scores(), pending.scored)
            if out.market is not None:  # one drift check per market trading day
                m.observe_drift(self.scorer.check_drift())
        return Stored(pending.poll, out.bar_count)

    def show_freshness(self) -> None:
        """Put the store's freshness into the metrics: when the newest record was consumed
        (before a restart, too) and the newest stored bar's day."""
        prefix = f"{LAST_EVENT_COUNTER}."
        for name, value in self.store.counters().items():
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                partition = int(name[len(prefix) :])
                self._event_seconds[partition] = max(self._event_seconds.get(partition, 0), value)
        newest = self.store.last_bars(1)
        self.metrics.observe_freshness(
            max(self._event_seconds.values(), default=0) or None,
            None if newest.empty else newest["ts"].max().strftime("%Y-%m-%d"),
        )

    def show_model(self) -> None:
        """Put the scorer's champion (or its absence) into the metrics."""
        if self.scorer is None:
            return
        model = self.scorer.model
        report = None if model is None else model.record.report
        self.metrics.set_model(self.scorer.version if model is not None else None, report)


def ingest_consumer(
    config: Config,
    store: Store,
    metrics: Metrics,
    stop: threading.Event,
    pipeline: Pipeline | None = None,
    consumer_options: dict[str, Any] | None = None,
    scorer: LiveScorer | None = None,
) -> MarketDataConsumer:
    """A market-data consumer that ingests into `store` through an `Ingest` step (its `step`)."""
    step = Ingest(config, store, metrics, pipeline=pipeline, scorer=scorer)
    return MarketDataConsumer(config, step, metrics, stop, consumer_options=consumer_options)

