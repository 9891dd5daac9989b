"""Dead letters: rejected records go to `<topic>.dlq` with their original bytes.

Headers carry the reason code, a detail naming the field and value, and the source topic,
partition and offset, so an operator can find, fix and replay them.

No record stops the consumer, whatever its size or the state of the dead-letter topic:

- a dead letter larger than `events.dead_letter_max_bytes` (the producer's request limit) is
  published as a bounded copy, a prefix of its value, with the headers `truncated`,
  `original_size` and `original_sha256` added (a broker that refuses a letter as too large
  gets a copy half the size);
- a dead letter that fails to publish is sent again with capped exponential backoff for
  `events.dead_letter_retry_seconds`; the ones still unpublished then (or when the daemon is
  asked to stop) are handed back by `flush`, and the consumer parks them in the store's
  `dead_letters` table in the batch's own transaction, with its offsets.

So the offsets never pass a dead letter that is neither acknowledged by the brokers nor stored.
Publishing is at least once: a letter whose acknowledgement was lost, or whose batch was not
stored before a crash, is published again; `source_partition` and `source_offset` identify it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from consumers._client import client_options
from daemon.config import EventsConfig, KafkaConfig
from daemon.domain import Backoff, DeadLetterRow
from daemon.errors import DeadLetterError, EventRejected

logger = logging.getLogger(__name__)

#: Bytes of a dead letter's limit kept for the framing of its record batch (under 100 bytes
#: for one record) and the headers a bounded copy adds.
FRAMING_BYTES = 1024
#: A bounded copy keeps at most this much of the record's key.
MAX_KEY_BYTES = 1024
#: Backoff between attempts to publish dead letters: doubling from the first to the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 5.0
#: How long one attempt waits for the brokers (request, delivery, metadata).
ATTEMPT_TIMEOUT_MS = 10_000
#: Seconds `close` waits for the producer.
CLOSE_TIMEOUT_S = 2.0


def dead_letter_headers(record: Any, rejected: EventRejected) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: reason, detail and where the record came from."""
    return [
        ("reason", rejected.reason.encode()),
        ("detail", rejected.detail.encode("utf-8", "replace")[:1024]),
        ("source_topic", str(record.topic).encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """One rejected record as it is published: key, value, headers, and where it came from."""

    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Any, rejected: EventRejected) -> DeadLetter:
        """The dead letter of a consumed record, whole."""
        return cls(
            str(record.topic),
            int(record.partition),
            int(record.offset),
            rejected.reason,
            record.key,
            record.value if record.value is not None else b"",
            tuple(dead_letter_headers(record, rejected)),
        )

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (the record batch adds its framing)."""
        return (
            len(self.key or b"")
            + len(self.value)
            + sum(len(name) + len(value) for name, value in self.headers)
        )

    @property
    def truncated(self) -> bool:
        return any(name == "truncated" for name, _ in self.headers)

    def bounded(self, limit: int) -> DeadLetter:
        """This letter if it fits in `limit` bytes with its framing, else a bounded copy: a
        prefix of the value (and of an over-long key), with the original's size and sha256."""
        if self.size + FRAMING_BYTES <= limit:
            return self
        headers = self.headers
        if not self.truncated:
            headers += (
                ("truncated", b"true"),
                ("original_size", str(len(self.value)).encode()),
                ("original_sha256", hashlib.sha256(self.value).hexdigest().encode()),
            )
            if self.key is not None and len(self.key) > MAX_KEY_BYTES:
                headers += (("original_key_size", str(len(self.key)).encode()),)
        key = self.key[:MAX_KEY_BYTES] if self.key is not None else None
        room = limit - FRAMING_BYTES - len(key or b"") - sum(len(n) + len(v) for n, v in headers)
        return replace(self, key=key, value=self.value[: max(room, 0)], headers=headers)

    def row(self, parked_at: str) -> DeadLetterRow:
        """The letter as a row of the store's `dead_letters` table."""
        headers = json.dumps(
            [[name, value.decode("utf-8", "replace")] for name, value in self.headers]
        )
        return (
            self.source_topic,
            self.source_partition,
            self.source_offset,
            self.reason,
            self.key,
            self.value,
            headers,
            parked_at,
        )


class DeadLetters:
    """A producer for the dead-letter topic: `send` each rejected record, then `flush` before
    the batch's offsets are stored, and store the letters `flush` returns with them."""

    def __init__(
        self,
        config: KafkaConfig,
        events: EventsConfig | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventsConfig()
        self.topic = config.effective_dlq_topic
        #: Set when the daemon is asked to stop: no more waiting between attempts.
        self.stop = stop or threading.Event()
        self._producer: Any = None
        #: Letters sent and not yet settled: each with its future, or the error of its send.
        self._pending: list[tuple[DeadLetter, Any]] = []
        #: Why the brokers were found unreachable in this attempt (None: not so far).
        self._unreachable: Exception | None = None

    def open(self) -> None:
        """Open the producer (once)."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        if self._producer is not None:
            return
        try:
            self._producer = KafkaProducer(
                **client_options(self.config),
                acks="all",
                max_request_size=self.events.dead_letter_max_bytes,
                max_block_ms=ATTEMPT_TIMEOUT_MS // 2,
                request_timeout_ms=ATTEMPT_TIMEOUT_MS // 2,
                delivery_timeout_ms=ATTEMPT_TIMEOUT_MS,
            )
        except KafkaError as exc:
            raise DeadLetterError(f"cannot open a producer for {self.topic}: {exc}") from None

    def send(self, record: Any, rejected: EventRejected) -> None:
        """Queue the record's original key and bytes (or a bounded copy) with the reason
        headers. Never raises for the brokers: `flush` retries what failed."""
        logger.debug(
            "rejected %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejected
        )
        letter = DeadLetter.of(record, rejected).bounded(self.events.dead_letter_max_bytes)
        self._pending.append((letter, self._publish(letter)))

    def _publish(self, letter: DeadLetter) -> Any:
        """Send one letter: its future, or the error that kept it from being sent. After a
        send that timed out (no metadata: the brokers are away), the next ones of the same
        attempt fail at once instead of waiting as long again."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        if self._unreachable is not None:
            return self._unreachable
        try:
            if self._producer is None:
                self.open()
            return self._producer.send(
                self.topic, key=letter.key, value=letter.value, headers=list(letter.headers)
            )
        except (KafkaError, DeadLetterError, ValueError) as exc:  # ValueError: a bad topic name
            if isinstance(exc, KafkaTimeoutError | DeadLetterError):
                self._unreachable = exc
            return exc

    def flush(self) -> list[DeadLetter]:
        """Wait until every queued dead letter is acknowledged by the brokers, sending the
        ones that fail again after a capped backoff; return those still unpublished after
        `events.dead_letter_retry_seconds` (or once `stop` is set), for the store."""
        deadline = time.monotonic() + self.events.dead_letter_retry_seconds
        backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_CAP_S)
        while True:
            self._wait(deadline)
            self._unreachable = None  # the next attempt tries the brokers again
            failed, waiting = self._settled()
            if not failed and not waiting:
                return []
            unpublished = [letter for letter, _ in failed] + [letter for letter, _ in waiting]
            error = failed[-1][1] if failed else "no acknowledgement yet"
            delay = backoff.next()
            attempt = backoff.attempts
            if self.stop.is_set() or time.monotonic() + delay > deadline:
                logger.warning(
                    "%d dead letter(s) not published to %s after %d attempt(s) (%s): parked in "
                    "the store's dead_letters table",
                    len(unpublished),
                    self.topic,
                    attempt,
                    error,
                )
                self._pending = []  # a late acknowledgement publishes a parked letter twice
                return unpublished
            logger.warning(
                "%d dead letter(s) not published to %s yet (%s); attempt %d in %.1f s",
                len(unpublished),
                self.topic,
                error,
                attempt + 1,
                delay,
            )
            self.stop.wait(delay)
            again = [_smaller(letter, exc) for letter, exc in failed]
            self._pending = waiting + [(letter, self._publish(letter)) for letter in again]

    def _wait(self, deadline: float) -> None:
        """Let the producer send what it holds, until acknowledged or `deadline` at most."""
        from kafka.errors import KafkaError

        if self._producer is None or all(isinstance(f, Exception) for _, f in self._pending):
            return
        end = min(deadline, time.monotonic() + ATTEMPT_TIMEOUT_MS / 1000)
        while not self.stop.is_set():  # in steps of at most a second: a stop is not kept waiting
            try:
                self._producer.flush(timeout=min(max(end - time.monotonic(), 0.1), 1.0))
                return
            except KafkaError as exc:
                if time.monotonic() >= end:
                    logger.debug("dead-letter flush: %s", exc)
                    return

    def _settled(self) -> tuple[list[tuple[DeadLetter, Exception]], list[tuple[DeadLetter, Any]]]:
        """The pending letters that failed (with their error) and those still waiting for
        an answer; the acknowledged ones are done with."""
        failed: list[tuple[DeadLetter, Exception]] = []
        waiting: list[tuple[DeadLetter, Any]] = []
        for letter, future in self._pending:
            if isinstance(future, Exception):
                failed.append((letter, future))
            elif not future.is_done:
                waiting.append((letter, future))
            elif future.exception is not None:
                failed.append((letter, future.exception))
        self._pending = []
        return failed, waiting

    def close(self) -> None:
        from kafka.errors import KafkaError

        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=CLOSE_TIMEOUT_S)
        except KafkaError as exc:
            # kafka-python's close stops at a flush that times out, before it stops its
            # sender thread: letters it still holds are parked already, so drop them.
            logger.warning(
                "dead-letter producer for %s closed with letters unsent: %s", self.topic, exc
            )
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            with contextlib.suppress(KafkaError):
                producer.close(timeout=CLOSE_TIMEOUT_S)


def _smaller(letter: DeadLetter, error: Exception) -> DeadLetter:
    """The letter to send again after `error`: a copy half the size if the brokers refused it
    as too large, else the same letter."""
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    if isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError):
        return letter.bounded(max(letter.size // 2, FRAMING_BYTES + 4096))
    return letter


def parked_at() -> str:
    """The time a batch's unpublished dead letters are parked, as stored (ISO 8601, UTC)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
