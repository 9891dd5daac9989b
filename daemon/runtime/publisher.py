"""The publisher of the output topics: the store's outbox to Kafka, on a thread of its own.

The ingest step writes each batch's records (`daemon.pipeline.records`) to the outbox in the
batch's own transaction. This thread sends the oldest of them exactly as stored
(`consumers.outputs.OutputProducer`, idempotent, `acks="all"`), and only after the broker has
acknowledged every one deletes them from the outbox. A SIGKILL anywhere therefore loses no
record, and at worst sends the last unconfirmed records again as identical copies.

When Kafka does not take the records the thread retries with a capped backoff; the records
pile up in the outbox, and once `outputs.max_pending` of them wait, `hold_reason` tells the
consumer to stop taking market data (it keeps its group membership) until no more than half of
that bound wait.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import Callable

from consumers.outputs import OutputProducer
from daemon.config import Config
from daemon.domain import Backoff
from daemon.errors import RegimedError
from daemon.monitor.metrics import Metrics
from daemon.store.outbox import Outbox, OutboxRecord
from daemon.store.sqlite import Store

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

#: The longest the thread sleeps with nothing to send before it looks at the outbox again
#: (a stored batch wakes it at once).
IDLE_WAIT_S = 0.5
#: The first pause after a failed send, and the longest.
RETRY_S = 1.0
RETRY_CAP_S = 30.0
#: How long `stop` waits for the thread (a send in hand is bounded by the producer's timeout).
JOIN_TIMEOUT_S = 20.0


class Publisher:
    """Publishes the outbox until stopped; see the module docstring."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        producer: Callable[[], OutputProducer] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        kafka = config.kafka
        if config.outputs.bootstrap_servers:
            kafka = dataclasses.replace(kafka, bootstrap_servers=config.outputs.bootstrap_servers)
        self.servers = ",".join(kafka.bootstrap_servers)
        self._stop = threading.Event()
        self._producer = producer or (
            lambda: OutputProducer(kafka, timeout_s=10.0, stop=self._stop)
        )
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._holding = False
        #: Why the last send failed (None once one succeeds).
        self.error: str | None = None

    @property
    def pending(self) -> int:
        """Records in the outbox (as last counted, plus those stored since)."""
        return self._pending

    def start(self) -> None:
        """Count the outbox and start the thread."""
        with Store.open(self.config.store) as store:
            self._set_pending(Outbox(store).pending())
        self._thread = threading.Thread(target=self._run, name="regimed-outputs")
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after the send in hand (returns at once)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Stop the thread after the send in hand and wait for it (bounded); records not yet
        acknowledged stay in the outbox for the next start."""
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("the output publisher did not stop within %.0f s", timeout_s)

    def stored(self, records: int) -> None:
        """A batch with `records` outbox records was committed: count them, send them."""
        if records:
            with self._lock:
                self._pending += records
            self.metrics.outbox_pending.set(self._pending)
            self._wake.set()

    def hold_reason(self) -> str | None:
        """Why the consumer should take no market data now, or None: from the moment
        `outputs.max_pending` records wait until no more than half of them do."""
        limit = self.config.outputs.max_pending
        pending = self._pending
        # Held from `limit` down to half of it: polling does not flap at the bound.
        self._holding = pending >= (limit // 2 if self._holding else limit)
        if not self._holding:
            return None
        why = f": {self.error}" if self.error else ""
        return (
            f"outbox full: {pending:,} records wait for Kafka at {self.servers} "
            f"(outputs.max_pending = {limit}){why}"
        )

    def _set_pending(self, n: int) -> None:
        with self._lock:
            self._pending = n
        self.metrics.outbox_pending.set(n)

    def _run(self) -> None:
        producer = self._producer()
        backoff = Backoff(RETRY_S, RETRY_CAP_S)
        try:
            with Store.open(self.config.store) as store:
                outbox = Outbox(store)
                while not self._stop.is_set():
                    try:
                        sent = self._publish_once(outbox, producer)
                    except Exception as exc:  # the records stay; tried again after a pause
                        if self._stop.is_set():  # the send was cut short by the stop
                            break
                        self.error = str(exc) or type(exc).__name__
                        delay = backoff.next()
                        # A Kafka or store failure is expected now and then; anything else is a
                        # bug, logged with its traceback.
                        log = logger.warning if isinstance(exc, RegimedError) else logger.exception
                        log(
                            "output records not published (attempt %d, next in %.0f s, %d "
                            "waiting): %s",
                            backoff.attempts,
                            delay,
                            self._pending,
                            exc,
                        )
                        self._stop.wait(delay)
                        continue
                    if backoff.attempts:
                        logger.info("output records published again after %d failed attempts",
                                    backoff.attempts)  # fmt: skip
                        backoff.reset()
                        self.error = None
                    if not sent:
                        self._wake.wait(IDLE_WAIT_S)
                        self._wake.clear()
        except Exception:
            self.error = "the output publisher stopped (see the log)"
            logger.exception("the output publisher stopped")
        finally:
            producer.close()

    def _publish_once(self, outbox: Outbox, producer: OutputProducer) -> int:
        """Send the oldest records and forget them once acknowledged: how many."""
        self._set_pending(outbox.pending())
        records = outbox.oldest(self.config.outputs.publish_batch_records)
        if not records:
            return 0
        producer.send(records)
        outbox.published(records[-1].id)
        with self._lock:
            self._pending = max(0, self._pending - len(records))
        self.metrics.outbox_pending.set(self._pending)
        self._count(records)
        return len(records)

    def _count(self, records: list[OutboxRecord]) -> None:
        for topic, n in Counter(r.topic for r in records).items():
            self.metrics.output_records_published.labels(topic=topic).inc(n)
