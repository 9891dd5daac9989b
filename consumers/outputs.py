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

#: Largest output record the producer takes (records are a few hundred bytes).
MAX_REQUEST_BYTES = 1_048_576


class OutputProducer:
    """Sends outbox records and waits for the broker's acknowledgements."""

    def __init__(self, config: KafkaConfig, timeout_s: float = 30.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._producer: Any = None

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
            futures = [producer.send(r.topic, key=r.key, value=r.value) for r in records]
            producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self.close()
            raise OutputError(
                f"the output records were not acknowledged by Kafka at {self.servers}: {exc}"
            ) from None

    def close(self, timeout_s: float = 5.0) -> None:
        from kafka.errors import KafkaError

        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as exc:  # closing after a failure: nothing left to lose
            logger.debug("output producer close: %s", exc)
