"""The producer of the output topics: records from the store's outbox, sent as stored.

An idempotent producer (confluent-kafka, librdkafka's: `enable.idempotence`, `acks=all`): the
broker writes each record once however often the client retries it within a session. `send`
returns only once every record's delivery report said the broker acknowledged it, and raises
`OutputError` otherwise; the caller then marks them published in the outbox, or keeps them and
sends them again. A producer that failed is closed and opened anew, so a new session re-sends
identical copies (the bytes the outbox holds) and never a record with different content.

librdkafka rather than kafka-python: it costs about a tenth of the CPU per record in the
daemon's process (docs/benchmarks.md, "Outputs"), which the consumer thread needs. Keyed records
go where Kafka's default (Java) partitioner puts them: `murmur2_random` is murmur2 of the key
over the topic's partitions, as kafka-python's and Java's default is (librdkafka's own default,
`consistent_random`, is CRC32 and would not match).

Kafka transactions are not used: the embedded Tansu broker accepts them but shows the records
of an aborted transaction to `read_committed` consumers too (docs/outputs.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from consumers._client import librdkafka_options, probe
from daemon.config import KafkaConfig
from daemon.errors import OutputError
from daemon.store.outbox import OutboxRecord

__all__ = ["OutputProducer"]

logger = logging.getLogger(__name__)

#: How long the producer waits for more records before it sends a partition's batch.
LINGER_MS = 5
#: Records librdkafka may hold unsent (outputs.publish_batch_records is at most 100,000).
QUEUE_RECORDS = 200_000
#: The slices in which `send` waits for acknowledgements, looking at the stop flag in between.
WAIT_SLICE_S = 0.25
#: librdkafka's log facilities of a broker connection that failed or timed out: what the
#: publisher reports itself, once per failed send, with the delivery error (kept at DEBUG).
CONNECTION_FACILITIES = frozenset({"FAIL", "ERROR", "REQTMOUT", "TIMEOUT", "BROKERFAIL"})


class LibrdkafkaLog:
    """librdkafka's log lines, to the `consumers.outputs.librdkafka` logger (given to the
    producer as its `logger`, so nothing is printed raw to stderr). confluent-kafka has mapped
    syslog's levels to logging's; connection failures go to DEBUG (see CONNECTION_FACILITIES),
    the rest keeps its level."""

    def __init__(self, name: str = f"{__name__}.librdkafka") -> None:
        self.logger = logging.getLogger(name)

    def log(self, level: int, msg: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        if level > logging.DEBUG and facility in CONNECTION_FACILITIES:
            level = logging.DEBUG
        self.logger.log(level, msg, *args)


class _Reports:
    """The delivery reports of one `send`: how many were acknowledged, the first failure."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self.failure: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acknowledged += 1
        elif self.failure is None:
            self.failure = f"{msg.topic()}: {err.str()}"


class OutputProducer:
    """Sends outbox records and waits for the broker's acknowledgements (at most `timeout_s`
    per `send`, less when `stop` is set)."""

    def __init__(
        self,
        config: KafkaConfig,
        timeout_s: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.stop = stop or threading.Event()
        self._producer: Any = None
        #: The last error librdkafka reported outside a delivery report (a broker away...).
        self.broker_error: str | None = None

    @property
    def servers(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    def options(self) -> dict[str, Any]:
        """The producer's librdkafka configuration."""
        timeout_ms = int(self.timeout_s * 1000)
        return librdkafka_options(self.config) | {
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": LINGER_MS,
            "queue.buffering.max.messages": QUEUE_RECORDS,
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": max(1000, timeout_ms // 2),
            "socket.connection.setup.timeout.ms": max(1000, timeout_ms // 2),
            "log.connection.close": False,
            "logger": LibrdkafkaLog(),
            "error_cb": self._on_error,
        }

    def _on_error(self, err: Any) -> None:
        self.broker_error = err.str()
        logger.debug("output producer: %s", self.broker_error)

    def open(self) -> None:
        """Build the producer (once); `OutputError` when no broker answers or a setting is
        refused."""
        from confluent_kafka import KafkaException, Producer

        if self._producer is not None:
            return
        unreachable = probe(self.config.bootstrap_servers)
        if unreachable is not None:
            raise OutputError(f"no bootstrap server answers ({unreachable})")
        try:
            self._producer = Producer(self.options())
        except KafkaException as exc:
            raise OutputError(
                f"cannot make a producer for Kafka at {self.servers}: {exc}"
            ) from None

    def send(self, records: Sequence[OutboxRecord]) -> None:
        """Send `records` in order and wait until the broker acknowledged all of them;
        `OutputError` (and a closed producer) when it did not within `timeout_s`, or when
        `stop` was set first."""
        from confluent_kafka import KafkaException

        self.open()
        producer = self._producer
        reports = _Reports()
        deadline = time.monotonic() + self.timeout_s
        try:
            for r in records:
                while True:
                    try:
                        producer.produce(r.topic, value=r.value, key=r.key, on_delivery=reports)
                        break
                    except BufferError:  # librdkafka's queue is full: let it send some
                        self._check_time(deadline, reports, len(records))
                        producer.poll(WAIT_SLICE_S)
            while producer.flush(WAIT_SLICE_S):
                self._check_time(deadline, reports, len(records))
        except KafkaException as exc:
            reports.failure = reports.failure or str(exc)
        except OutputError:
            self.close(timeout_s=0)
            raise
        if reports.failure is not None or reports.acknowledged != len(records):
            self.close(timeout_s=0)
            raise OutputError(
                f"the output records were not acknowledged by Kafka at {self.servers}: "
                f"{reports.failure or 'no delivery report'}{self._last_error()}"
            )

    def _check_time(self, deadline: float, reports: _Reports, n: int) -> None:
        """`OutputError` once past `deadline` or asked to stop."""
        if self.stop.is_set():
            why = "stopped"
        elif time.monotonic() >= deadline:
            why = f"no acknowledgement within {self.timeout_s:.0f} s"
        else:
            return
        raise OutputError(
            f"the output records were not acknowledged by Kafka at {self.servers}: {why} "
            f"({reports.acknowledged} of {n} acknowledged){self._last_error()}"
        )

    def _last_error(self) -> str:
        return f" (last broker error: {self.broker_error})" if self.broker_error else ""

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for the records in hand, then drop the rest and the
        producer (they stay in the outbox)."""
        from confluent_kafka import KafkaException

        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            if producer.flush(timeout_s):
                producer.purge()
                producer.flush(0)
            if hasattr(producer, "close"):  # older releases close the producer when dropped
                producer.close()
        except (KafkaException, RuntimeError) as exc:  # nothing left to lose
            logger.debug("output producer close: %s", exc)
