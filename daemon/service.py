"""The daemon's lifecycle (`regimed run`): open every part, run until asked to stop, close.

An `ExitStack` opens the store, the metrics endpoint and the consumer, and closes them in
reverse order. Signals only set the stop flag (a second SIGINT forces the exit); the consumer
finishes the batch in hand, commits its offsets on a clean stop and never after a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING, Any

from daemon._sdnotify import Notifier
from daemon.config import Config
from daemon.errors import RegimedError
from daemon.live import LiveScorer
from daemon.locks import daemon_lock
from daemon.metrics import Metrics, serve
from daemon.runtime import Retrains
from daemon.store import Store

if TYPE_CHECKING:
    from consumers.kafka_source import MarketDataConsumer

logger = logging.getLogger(__name__)

SAMPLE_GAUGE_INTERVAL_S = 10.0

#: Sections SIGHUP applies to a running daemon: what the next retrain reads, and the alerts.
RELOADABLE = ("alerts", "training", "models", "gate", "sampling", "weights", "archive")


class State(enum.Enum):
    """Where the service is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Service:
    """The daemon: ingest from Kafka into SQLite with metrics, until stopped."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self._reload_source = reload
        self._reload_requested = threading.Event()
        self.metrics = metrics or Metrics.create()
        self.notifier = notifier or Notifier.from_env()  # sd_notify; a no-op outside systemd
        self.stop_event = threading.Event()
        self.state = State.STOPPED
        self.metrics_port: int | None = None
        self.retrains: Retrains | None = None
        self.scorer: LiveScorer | None = None
        self._sigints = 0

    def request_stop(self) -> None:
        """Ask the service to stop after the batch in hand (returns at once)."""
        if self.state in (State.STARTING, State.RUNNING):
            self.state = State.STOPPING
        self.stop_event.set()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT set the stop flag; a second SIGINT exits at once (code 130);
        SIGHUP asks for a reload of the reloadable configuration (`reload_config`)."""
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

        def hangup(signum: int, frame: FrameType | None) -> None:
            self._reload_requested.set()  # acted on by the main loop, not in the handler

        old = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)
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
            stack.enter_context(daemon_lock(self.config.store.path))  # one daemon per store
            store = stack.enter_context(Store.open(self.config.store, check=True))
            self.retrains = Retrains(self.config, self.metrics, self.stop_event)
            stack.callback(self.retrains.close)
            self.scorer = LiveScorer(self.config, store, on_drift=self.retrains.drift)
            consumer = MarketDataConsumer(
                self.config, store, self.metrics, self.stop_event, scorer=self.scorer
            )
            self._serve_metrics(stack, consumer)
            self._update_sample_gauge(store)
            self.scorer.refresh(force=True)
            consumer.show_model()
            if self.scorer.model is None:
                logger.warning(
                    "no champion model yet: ingesting without scoring until a retrain "
                    "promotes one (regimed retrain, or the schedule)"
                )
            clean = False
            try:
                self.retrains.start(store)
                consumer.open()
                if self.state is State.STARTING:
                    self.state = State.RUNNING
                logger.info("regimed running (start-up took %.2fs)", time.monotonic() - started)
                self.notifier.ready()
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                consumed = 0
                while not self.stop_event.is_set():
                    self.notifier.watchdog()
                    if self._reload_requested.is_set():
                        self._reload_requested.clear()
                        self.reload_config()
                    self._status(consumer)
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

    def reload_config(self) -> list[str]:
        """Re-read the configuration (SIGHUP) and apply the sections a running daemon can
        take over: what the next retrain uses and where alerts go. Changes to the other
        sections need a restart and are logged. Returns the sections applied. A bad file
        changes nothing (the error is logged)."""
        if self._reload_source is None or self.retrains is None:
            logger.warning("SIGHUP: no configuration file to reload")
            return []
        try:
            new = self._reload_source()
        except RegimedError as exc:
            logger.error("SIGHUP: configuration not reloaded: %s", exc)
            return []
        old = self.config
        applied = [s for s in RELOADABLE if getattr(new, s) != getattr(old, s)]
        ignored = [
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in RELOADABLE and getattr(new, f.name) != getattr(old, f.name)
        ]
        self.config = dataclasses.replace(old, **{s: getattr(new, s) for s in applied})
        self.retrains.reconfigure(self.config)
        logger.info("SIGHUP: reloaded %s", ", ".join(applied) or "nothing (no change)")
        if ignored:
            logger.warning("SIGHUP: changes to %s need a restart", ", ".join(ignored))
        return applied

    def _status(self, consumer: MarketDataConsumer) -> None:
        scorer = self.scorer
        model = (
            "no champion (not scoring)"
            if scorer is None or scorer.model is None
            else (f"champion {scorer.version}")
        )
        stored = consumer.summary_line()
        self.notifier.notify(f"STATUS={stored}; {model}")

    def _serve_metrics(self, stack: ExitStack, consumer: MarketDataConsumer) -> None:
        m = self.config.metrics

        def health() -> tuple[bool, str]:
            idle = time.monotonic() - consumer.last_progress
            if self.state is not State.RUNNING:
                return False, f"state {self.state.value}"
            if idle > m.healthz_stall_seconds:
                return False, f"consume loop stalled: no poll for {idle:.0f} s"
            return True, f"ok: last poll {idle:.1f} s ago"

        server, thread = serve(self.metrics, m, health)
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
