"""Dead letters: rejected records go to `<topic>.dlq` with their original bytes.

Headers carry the reason code, a detail naming the field and value, and the source topic,
partition and offset, so an operator can find, fix and replay them.
"""

from __future__ import annotations

import logging
from typing import Any

from consumers._client import client_options
from consumers.events import EventRejected
from daemon.config import KafkaConfig
from daemon.errors import RegimedError

logger = logging.getLogger(__name__)


class DeadLetterError(RegimedError):
    """A rejected record could not be written to the dead-letter topic."""


def dead_letter_headers(record: Any, rejected: EventRejected) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: reason, detail and where the record came from."""
    return [
        ("reason", rejected.reason.encode()),
        ("detail", rejected.detail.encode("utf-8", "replace")[:1024]),
        ("source_topic", str(record.topic).encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]


class DeadLetters:
    """A producer for the dead-letter topic; `flush` before the batch's offsets are stored."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.topic = config.effective_dlq_topic
        self._producer: Any = None
        self._pending: list[Any] = []

    def open(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self._producer = KafkaProducer(**client_options(self.config), acks="all")
        except KafkaError as exc:
            raise DeadLetterError(f"cannot open a producer for {self.topic}: {exc}") from None

    def send(self, record: Any, rejected: EventRejected) -> None:
        """Queue the record's original key and bytes with the reason headers."""
        if self._producer is None:
            self.open()
        logger.debug(
            "rejected %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejected
        )
        value = record.value if record.value is not None else b""
        self._pending.append(
            self._producer.send(
                self.topic,
                key=record.key,
                value=value,
                headers=dead_letter_headers(record, rejected),
            )
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued dead letter is acknowledged by the brokers."""
        from kafka.errors import KafkaError

        if self._producer is None or not self._pending:
            return
        try:
            self._producer.flush(timeout=timeout_s)
            for future in self._pending:
                future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise DeadLetterError(f"dead letters to {self.topic} not acknowledged: {exc}") from None
        finally:
            self._pending.clear()

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=10)
