"""The market-data consumer: Kafka records in, one ingest step per polled batch.

For every poll: decode and validate each record (invalid ones go to the dead-letter topic) and
hand the valid bars, the poll's next offsets and its parked dead letters to the `IngestStep`
(`daemon.runtime.ingest.Ingest`: pipeline, scores, one store transaction, metrics); only once
the step reports the batch stored are its offsets committed to Kafka (asynchronously: the store
is the truth). Records below the offset the store holds are skipped, so a crash between the
store's commit and Kafka's duplicates nothing; newly assigned partitions seek to the stored
offset when it is ahead of the group's committed one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consumers._client import (
    BOOTSTRAP_TIMEOUT_MS,
    BrokerWatch,
    client_options,
    open_consumer,
    probe,
    quiet_client_logs,
)
from consumers._rejections import RejectionLog
from consumers.dlq import DeadLetters, parked_at
from consumers.events import DecodedBatch, decode_batch
from consumers.step import ConsumerMetrics, IngestStep, Poll, RunSummary, Stored
from daemon.config import Config
from daemon.errors import ConsumerError

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class _Rebalance:
    """Rebalance listener. kafka-python runs it on its IO thread, so it only records what
    changed; the consumer thread acts on it (seeks, state reloads) after the poll returns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.assigned: set[Any] = set()
        self.revoked: set[Any] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self.lock:
            self.revoked.update(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self.lock:
            self.assigned.update(assigned)

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def take(self) -> tuple[set[Any], set[Any]]:
        with self.lock:
            assigned, revoked = self.assigned, self.revoked
            self.assigned, self.revoked = set(), set()
        return assigned, revoked


def _listener(rebalance: _Rebalance) -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            rebalance.on_partitions_revoked(revoked)

        def on_partitions_assigned(self, assigned: Any) -> None:
            rebalance.on_partitions_assigned(assigned)

        def on_partitions_lost(self, lost: Any) -> None:
            rebalance.on_partitions_lost(lost)

    return Listener()


#: The cyclic garbage collector's first threshold while consuming (Python's default is 700).
#: A poll of 10,000 bars allocates some 60,000 tuples and lists, almost all freed by reference
#: counting; at 700 the collector runs about 90 times a poll and walks the older generations
#: too. docs/benchmarks.md ("Ingest") has the measurement.
GC_THRESHOLD = 100_000


def assignors() -> list[Any]:
    """The partition assignors the consumer offers, preferred first: sticky, then range.

    Sticky keeps partitions where they are on a rebalance (each partition that moves costs its
    symbols' state a rebuild from the store) and reports each member's current assignment in
    its join metadata. That report is what lets a survivor take a SIGKILLed static member's
    partitions on the embedded broker: there a join whose metadata is unchanged is answered
    with the member's previous assignment, and only a changed one starts a new assignment;
    sticky's metadata changes whenever the member's partitions changed in the rebalance before
    (not otherwise: docs/operations.md, "Several daemons"). Range stays on offer, so a group
    still running an older daemon during a rolling upgrade agrees on it until every member
    offers sticky.
    """
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    return [StickyPartitionAssignor, RangePartitionAssignor]


def tune_gc() -> None:
    """Collect garbage cycles less often (`GC_THRESHOLD`); the older generations' ratios are
    raised in step. Process-wide: the daemon runs one consumer."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, max(older, 20), max(oldest, 100))


class MarketDataConsumer:
    """Consumes `kafka.topic` through its ingest `step` until `stop` is set (or a limit is
    reached)."""

    def __init__(
        self,
        config: Config,
        step: IngestStep,
        metrics: ConsumerMetrics,
        stop: threading.Event,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.step = step
        #: When the consume loop last finished a poll (monotonic): /healthz and the watchdog.
        self.last_progress = time.monotonic()
        self.consumed_total = 0
        self._lags: dict[int, int] = {}
        self.metrics = metrics
        self.stop = stop
        self.topic = config.kafka.topic
        self.rebalance = _Rebalance()
        self.floors: dict[int, int] = {}
        self.partition_of: dict[str, int] = {}
        self._options = consumer_options or {}
        self._consumer: Any = None
        self.dlq = DeadLetters(config.kafka, config.events, stop)
        #: The run whose batch is in flight: counted once the step reports it stored.
        self._summary: RunSummary | None = None
        #: Whether the broker answers (heartbeats), for /healthz and the outage log lines.
        self.broker = _broker_watch(config)
        #: When the first record arrived (monotonic).
        self.first_record_at: float | None = None
        self.rejections = RejectionLog()
        #: Asked before every poll: why no record is to be taken now (the outbox of the output
        #: topics is full), or None. `held` is the reason polling is paused, None while not.
        self.hold: Callable[[], str | None] | None = None
        self.held: str | None = None

    def open(self) -> None:
        """Connect, join the group (static membership) and subscribe; ConsumerError when no
        bootstrap server answers (the caller retries)."""
        from kafka.errors import KafkaError

        tune_gc()
        quiet_client_logs()
        k = self.config.kafka
        unreachable = probe(k.bootstrap_servers)
        if unreachable is not None:
            raise ConsumerError(f"no bootstrap server answers ({unreachable})")
        options: dict[str, Any] = {
            **client_options(k),
            "group_id": k.group_id,
            "group_instance_id": k.effective_group_instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": k.max_poll_records,
            "max_poll_interval_ms": k.max_poll_interval_ms,
            "session_timeout_ms": k.session_timeout_ms,
            "heartbeat_interval_ms": k.heartbeat_interval_ms,
            "partition_assignment_strategy": assignors(),
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
            **self._options,
        }
        try:
            self._consumer = open_consumer(options)
        except KafkaError as exc:
            raise ConsumerError(
                f"cannot reach Kafka at {','.join(k.bootstrap_servers)}: {exc}"
            ) from None
        self.step.open()
        self._consumer.subscribe([self.topic], listener=_listener(self.rebalance))
        self.floors = self.step.resume()
        self.dlq.open()
        self.broker = _broker_watch(self.config)
        logger.info(
            "consuming %s as %s in group %s",
            self.topic,
            k.effective_group_instance_id,
            k.group_id,
        )

    def close(self, commit: bool) -> None:
        """Leave the group; commit the stored offsets first on a clean stop."""
        consumer, self._consumer = self._consumer, None
        member_id = consumer.group_metadata().member_id if consumer is not None else None
        try:
            if commit:
                self.settle()  # the batch in flight: stored before its offsets are committed
            if consumer is not None and commit:
                self._final_commit(consumer)
        finally:
            try:
                if consumer is not None:
                    consumer.close(autocommit=False)
                self.dlq.close()
            finally:
                self._summary = None
                self.step.close()
        if consumer is not None and commit and self.config.kafka.leave_group_on_stop:
            self._leave_group(member_id)

    def _leave_group(self, member_id: str | None) -> None:
        """Remove this static member from the group now, so its partitions move to the other
        members at once instead of after the session timeout (static members never send
        LeaveGroup themselves)."""
        from kafka.admin import KafkaAdminClient, MemberToRemove
        from kafka.errors import KafkaError

        k = self.config.kafka
        member = MemberToRemove(
            member_id=member_id or None, group_instance_id=k.effective_group_instance_id
        )
        try:
            admin = KafkaAdminClient(**client_options(k), bootstrap_timeout_ms=5000)
            try:
                admin.remove_group_members(k.group_id, [member])
            finally:
                admin.close()
        except KafkaError as exc:
            logger.warning(
                "could not leave group %s (partitions move after the session timeout instead): %s",
                k.group_id,
                exc,
            )

    def _commit(self, consumer: Any, sync: bool) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        assigned = {tp.partition for tp in consumer.assignment()}
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in self.floors.items()
            if p in assigned
        }
        if not offsets:
            return
        if sync:
            consumer.commit(offsets)
        else:
            consumer.commit_async(offsets, callback=self._committed)

    def _final_commit(self, consumer: Any) -> None:
        from kafka.errors import KafkaError

        for attempt in range(3):
            try:
                self._commit(consumer, sync=True)
                return
            except KafkaError as exc:
                # A rebalance under way: poll lets the member rejoin, then commit again.
                logger.warning("final offset commit, attempt %d: %s", attempt + 1, exc)
                consumer.poll(timeout_ms=500, max_records=1, update_offsets=False)
        logger.warning("final offset commit failed; SQLite holds the offsets (%s)", self.floors)

    @staticmethod
    def _committed(offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            logger.warning("async offset commit failed (SQLite keeps the truth): %s", response)

    def _handle_rebalance(self) -> None:
        assigned, revoked = self.rebalance.take()
        if not assigned and not revoked:
            return
        self.settle()  # stored offsets and bars are read below: the batch in flight first
        changed = {tp.partition for tp in assigned | revoked}
        # Symbols of a partition that moved may have been advanced by another member: reload.
        moved = [s for s, partition in self.partition_of.items() if partition in changed]
        for symbol in moved:
            del self.partition_of[symbol]
        self.step.forget(moved)
        if assigned:
            self.floors = self.step.resume()
            for tp in assigned:
                stored = self.floors.get(tp.partition)
                if stored is not None and stored > self._consumer.position(tp):
                    self._consumer.seek(tp, stored)
            logger.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    def run(self, max_messages: int | None = None, timeout_s: float | None = None) -> RunSummary:
        """Poll and store batches until stopped, `max_messages` records or `timeout_s`."""
        if self._consumer is None:
            self.open()
        summary = RunSummary()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.stop.is_set():
            if max_messages is not None and summary.consumed >= max_messages:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.hold is not None:
                self._hold(self.hold())
            polled = self._consumer.poll(timeout_ms=200)
            self.last_progress = time.monotonic()
            self.broker.sample(self._consumer)
            self._handle_rebalance()
            if polled:
                self._batch(polled, summary)
            else:
                self.settle()  # nothing new: the batch in flight is not left waiting
                self.step.idle()
            self._lag()
        self.settle()
        return summary

    def _hold(self, reason: str | None) -> None:
        """Pause every assigned partition while there is a `reason`, resume them after; the
        polls go on (the group membership stays) and bring no record meanwhile."""
        consumer = self._consumer
        if reason is not None:
            if self.held is None:
                logger.warning("polling paused: %s", reason)
            consumer.pause(*consumer.assignment())  # again after a rebalance
        elif self.held is not None:
            consumer.resume(*consumer.paused())
            logger.info("polling resumed")
        self.held = reason

    def _batch(self, polled: dict[Any, list[Any]], summary: RunSummary) -> None:
        offsets: dict[tuple[str, int], int] = {}
        rejected: Counter[str] = Counter()
        consumed = valid = 0
        now = dt.datetime.now(dt.UTC)  # bounds the records' ts: one reading for the batch
        partition_of = self.partition_of
        decoded: list[DecodedBatch] = []
        for tp, records in polled.items():
            consumed += len(records)
            floor = self.floors.get(tp.partition, -1)
            fresh = [r for r in records if r.offset >= floor]
            summary.skipped_duplicates += len(records) - len(fresh)
            if not fresh:
                continue
            offsets[(tp.topic, tp.partition)] = fresh[-1].offset + 1
            batch = decode_batch([(r.key, r.value) for r in fresh], now, self.config.events)
            for k, exc in batch.rejected:
                self.rejections.log(fresh[k], exc)
                rejected[exc.reason] += 1
                self.dlq.send(fresh[k], exc)
            valid += len(batch)
            partition_of.update(dict.fromkeys(batch.symbols, tp.partition))
            decoded.append(batch)
        self.metrics.events_consumed.labels(topic=self.topic).inc(consumed)
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
        self.consumed_total += consumed
        summary.consumed += consumed
        if not offsets:
            return
        # Dead letters are durable before their offsets are: acknowledged by the brokers, or
        # parked in the store with these offsets.
        unpublished = self.dlq.flush() if rejected else []
        at = parked_at()
        poll = Poll(
            _joined(decoded) if decoded else None,
            offsets,
            valid,
            rejected,
            [letter.row(at) for letter in unpublished],
        )
        self._summary = summary
        stored = self.step.write(poll)  # the previous batch may be stored now, or this one
        if stored is not None:
            self._stored(stored)
        for (_, partition), next_offset in offsets.items():
            self.floors[partition] = next_offset

    def settle(self) -> None:
        """Wait for the batch the store has in flight, then act on it: commit its offsets to
        Kafka and count it (nothing to do without one in flight)."""
        stored = self.step.settle()
        if stored is not None:
            self._stored(stored)

    def _stored(self, stored: Stored) -> None:
        """A batch is committed to the store: the rest of the world may now see it."""
        if self._consumer is not None:
            self._commit(self._consumer, sync=False)
        summary = self._summary
        if summary is None:
            return
        summary.batches += 1
        summary.stored_bars += stored.bars
        summary.rejected += sum(stored.poll.rejected.values())
        summary.reasons.update(stored.poll.rejected)

    def summary_line(self) -> str:
        """One line for systemd's STATUS=: what was consumed and stored."""
        lag = sum(self._lags.values())
        return f"{self.consumed_total:,} events consumed, lag {lag:,}"

    def partitions(self) -> frozenset[int]:
        """The partitions this member holds now (empty before the first join or after close)."""
        consumer = self._consumer
        if consumer is None:
            return frozenset()
        return frozenset(tp.partition for tp in consumer.assignment())

    def _lag(self) -> None:
        assigned = self._consumer.assignment()
        owned = {tp.partition for tp in assigned}
        for partition in [p for p in self._lags if p not in owned]:
            # A partition that moved to another daemon: its lag is theirs to report now.
            del self._lags[partition]
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(str(partition))
        for tp in assigned:
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            position = self.floors.get(tp.partition, 0)
            lag = max(0, high - position)
            self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(lag)
            self._lags[tp.partition] = lag


def _broker_watch(config: Config) -> BrokerWatch:
    """The watch on the broker's heartbeats, with /healthz's stall limit."""
    k = config.kafka
    join_s = k.max_poll_interval_ms / 1000  # the rebalance timeout of a join
    return BrokerWatch(k.bootstrap_servers, config.metrics.healthz_stall_seconds, join_s)


def _joined(batches: list[DecodedBatch]) -> DecodedBatch:
    """The valid bars of several partitions' batches as one, partition after partition."""
    if len(batches) == 1:
        return batches[0]
    joined = DecodedBatch()
    for batch in batches:
        for name in ("symbols", "ts", "days", "open", "high", "low", "close", "volume"):
            getattr(joined, name).extend(getattr(batch, name))
    return joined
