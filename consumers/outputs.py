"""The producer of the output topics: records from the store's outbox, sent as stored.

An idempotent producer (`enable_idempotence=True`, `acks="all"`): the broker writes each
record once however often the client retries it within a session. `send` returns only once the
broker has acknowledged every record it was given, and raises `OutputError` otherwise; the
caller then marks them published in the outbox, or keeps them and sends them again. A producer
that failed is closed and opened anew, so a new session re-sends identical copies (the bytes
the outbox holds) and never a record with different content.

Kafka transactions are not used: the embedded Tansu broker accepts them but shows the records
of an aborted transaction to `read_committed` consumers too (docs/outputs.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from consumers._client import client_options, probe, quiet_client_logs
from daemon.config import KafkaConfig
from daemon.errors import OutputError
from daemon.store.outbox import OutboxRecord

__all__ = ["OutputProducer"]

logger = logging.getLogger(__name__)

#: Largest request the producer sends (records are a few hundred bytes), and the size of the
#: batches it fills per partition: few, large batches cost the least CPU per record.
MAX_REQUEST_BYTES = 1_048_576
BATCH_BYTES = MAX_REQUEST_BYTES // 2


class OutputProducer:
    """Sends outbox records and waits for the broker's acknowledgements."""

    def __init__(self, config: KafkaConfig, timeout_s: float = 30.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._producer: Any = None
        #: The partition of each (topic, key), and each topic's partitions, for this session.
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._partitions: dict[str, list[int]] = {}

    @property
    def servers(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    def open(self) -> None:
        """Connect (once); `OutputError` when no broker answers."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        if self._producer is not None:
            return
        quiet_client_logs()
        unreachable = probe(self.config.bootstrap_servers)
        if unreachable is not None:
            raise OutputError(f"no bootstrap server answers ({unreachable})")
        timeout_ms = int(self.timeout_s * 1000)
        try:
            self._producer = KafkaProducer(
                **client_options(self.config),
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                batch_size=BATCH_BYTES,
                max_request_size=MAX_REQUEST_BYTES,
                max_block_ms=timeout_ms // 2,
                request_timeout_ms=timeout_ms // 2,
                delivery_timeout_ms=timeout_ms,
            )
        except KafkaError as exc:
            raise OutputError(f"cannot reach Kafka at {self.servers}: {exc}") from None

    def send(self, records: Sequence[OutboxRecord]) -> None:
        """Send `records` in order and wait until the broker acknowledged all of them;
        `OutputError` (and a closed producer) when it did not."""
        from kafka.errors import KafkaError

        self.open()
        producer = self._producer
        try:
            futures = [
                producer.send(
                    r.topic, key=r.key, value=r.value, partition=self._partition(r.topic, r.key)
                )
                for r in records
            ]
            producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self.close()
            raise OutputError(
                f"the output records were not acknowledged by Kafka at {self.servers}: {exc}"
            ) from None

    def _partition(self, topic: str, key: bytes) -> int:
        """The partition of `key`, as Kafka's default partitioner chooses it (murmur2 of the
        key over the topic's partitions), computed once per key and session: it is most of
        the CPU a keyed send costs in kafka-python. A topic's partitions are read when the
        session first sends to it; partitions added later are used after a reconnect."""
        from kafka.partitioner.default import murmur2

        known = self._partition_of.get((topic, key))
        if known is None:
            partitions = self._partitions.get(topic)
            if partitions is None:
                partitions = self._partitions[topic] = sorted(self._producer.partitions_for(topic))
            known = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            self._partition_of[(topic, key)] = known
        return known

    def close(self, timeout_s: float = 5.0) -> None:
        from kafka.errors import KafkaError

        producer, self._producer = self._producer, None
        self._partition_of.clear()
        self._partitions.clear()
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as exc:  # closing after a failure: nothing left to lose
            logger.debug("output producer close: %s", exc)
