"""The daemon's lifecycle (`regimed run`): open every part, run until asked to stop, close.

An `ExitStack` opens the store, the metrics endpoint and the consumer, and closes them in
reverse order. Signals only set the stop flag (a second SIGINT forces the exit); the consumer
finishes the batch in hand, commits its offsets on a clean stop and never after a failure.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from types import FrameType
from typing import Any

from daemon._sdnotify import Notifier
from daemon.config import Config
from daemon.metrics import Metrics, serve
from daemon.store import Store

logger = logging.getLogger(__name__)

SAMPLE_GAUGE_INTERVAL_S = 10.0


class State(enum.Enum):
    """Where the service is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Service:
    """The daemon: ingest from Kafka into SQLite with metrics, until stopped."""

    def __init__(
        self, config: Config, metrics: Metrics | None = None, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics.create()
        self.notifier = notifier or Notifier.from_env()  # sd_notify; a no-op outside systemd
        self.stop_event = threading.Event()
        self.state = State.STOPPED
        self.metrics_port: int | None = None
        self._sigints = 0

    def request_stop(self) -> None:
        """Ask the service to stop after the batch in hand (returns at once)."""
        if self.state in (State.STARTING, State.RUNNING):
            self.state = State.STOPPING
        self.stop_event.set()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT set the stop flag; a second SIGINT exits at once (code 130)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT:
                self._sigints += 1
                if self._sigints > 1:
                    logger.warning("second SIGINT: exiting now")
                    os._exit(130)
            logger.info("%s received: stopping", signal.Signals(signum).name)
            self.request_stop()

        old = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def run(self, max_messages: int | None = None, timeout_s: float | None = None) -> None:
        """Run until stopped (or `max_messages` records / `timeout_s` seconds, for tests)."""
        from consumers.kafka_source import MarketDataConsumer

        self.state = State.STARTING
        started = time.monotonic()
        with ExitStack() as stack:
            store = stack.enter_context(Store.open(self.config.store))
            self._serve_metrics(stack)
            self._update_sample_gauge(store)
            consumer = MarketDataConsumer(self.config, store, self.metrics, self.stop_event)
            clean = False
            try:
                consumer.open()
                if self.state is State.STARTING:
                    self.state = State.RUNNING
                logger.info("regimed running (start-up took %.2fs)", time.monotonic() - started)
                self.notifier.ready()
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                consumed = 0
                while not self.stop_event.is_set():
                    self.notifier.watchdog()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    step = SAMPLE_GAUGE_INTERVAL_S if left is None else min(left, 10.0)
                    step = min(step, self.notifier.watchdog_interval_s or step)
                    want = None if max_messages is None else max_messages - consumed
                    if want is not None and want <= 0:
                        break
                    summary = consumer.run(max_messages=want, timeout_s=step)
                    consumed += summary.consumed
                    self._update_sample_gauge(store)
                clean = True
            finally:
                self.state = State.STOPPING
                self.notifier.stopping()
                consumer.close(commit=clean)
        self.state = State.STOPPED
        logger.info("regimed stopped")

    def _serve_metrics(self, stack: ExitStack) -> None:
        m = self.config.metrics
        server, thread = serve(self.metrics, m.host, m.port)
        self.metrics_port = int(server.server_port)
        logger.info("metrics on http://%s:%d/metrics", m.host, self.metrics_port)

        def shutdown() -> None:
            server.shutdown()
            server.server_close()
            join: Any = getattr(thread, "join", None)
            if join is not None:
                join(timeout=5)

        stack.callback(shutdown)

    def _update_sample_gauge(self, store: Store) -> None:
        for source, counts in store.sample_counts().items():
            for regime, n in counts.items():
                self.metrics.samples_stored.labels(source=source, regime=regime).set(n)
