"""The daemon's lifecycle (`regimed run`): open every part, run until asked to stop, close.

An `ExitStack` opens the store, the metrics endpoint and the consumer, and closes them in
reverse order. Signals only set the stop flag (a second SIGINT forces the exit); the consumer
finishes the batch in hand, commits its offsets on a clean stop and never after a failure.

The service tells systemd it is ready once the store, /metrics and the retrain schedule are up,
before Kafka answers: a broker that is down at start-up is waited for (capped exponential
backoff, one WARNING per attempt, STATUS= and a 503 on /healthz saying so), so a broker
maintenance window never fails the start or runs into systemd's start limit.
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
from typing import Any

from consumers.kafka_source import MarketDataConsumer
from daemon.config import Config
from daemon.domain import Backoff
from daemon.errors import ConsumerError, DeadLetterError, RegimedError
from daemon.monitor.live import LiveScorer
from daemon.monitor.metrics import Metrics, serve
from daemon.monitor.regime_alerts import RegimeChangeAlerts
from daemon.runtime.ingest import Ingest
from daemon.runtime.publisher import Publisher
from daemon.runtime.retrains import Retrains
from daemon.runtime.sdnotify import Notifier
from daemon.runtime.status import no_champion_cause
from daemon.store.locks import daemon_lock
from daemon.store.sqlite import Store
from daemon.store.targets import use_target

logger = logging.getLogger(__name__)

SAMPLE_GAUGE_INTERVAL_S = 10.0
#: The first pause between two attempts to reach Kafka at start-up, and the longest one.
CONNECT_BACKOFF_S = 1.0
CONNECT_BACKOFF_CAP_S = 30.0

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
        stop_event: threading.Event | None = None,
    ) -> None:
        self.config = config
        self._reload_source = reload
        self._reload_requested = threading.Event()
        self.metrics = metrics or Metrics.create()
        self.notifier = notifier or Notifier.from_env()  # sd_notify; a no-op outside systemd
        #: Set by a signal or `request_stop`; may come from the caller, set before the run.
        self.stop_event = stop_event or threading.Event()
        self.state = State.STOPPED
        self.metrics_port: int | None = None
        self.retrains: Retrains | None = None
        self.scorer: LiveScorer | None = None
        self.regime_alerts: RegimeChangeAlerts | None = None
        self._sigints = 0
        #: Why the service is not consuming yet (for /healthz while it waits for Kafka).
        self._waiting = "starting"
        self._market_warned = False

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
        self.state = State.STARTING
        started = time.monotonic()
        with ExitStack() as stack:
            stack.enter_context(daemon_lock(self.config.store.path))  # one daemon per store
            store = stack.enter_context(Store.open(self.config.store, check=True))
            use_target(store, self.config.label)  # before a bar is labelled for the target
            self.retrains = Retrains(self.config, self.metrics, self.stop_event)
            stack.callback(self.retrains.close)
            self.scorer = LiveScorer(
                self.config, store, on_drift=self.retrains.drift, on_refused=self.retrains.refused
            )
            scorer = self.scorer
            self.retrains.champion_serving = lambda: scorer.model is not None
            publisher = self._start_publisher(stack)
            self.regime_alerts = RegimeChangeAlerts(self.config, self.retrains.alert)
            ingest = Ingest(
                self.config,
                store,
                self.metrics,
                scorer=self.scorer,
                on_outbox=None if publisher is None else publisher.stored,
                regime_alerts=self.regime_alerts,
            )
            consumer = MarketDataConsumer(self.config, ingest, self.metrics, self.stop_event)
            consumer.hold = None if publisher is None else publisher.hold_reason
            self._serve_metrics(stack, consumer)
            self._update_sample_gauge(store)
            self.scorer.refresh(force=True)
            ingest.show_model()
            ingest.show_freshness()  # before Kafka answers: a restart does not show 0
            if self.scorer.model is None:
                logger.warning(
                    "no champion model yet: ingesting without scoring until a retrain "
                    "promotes one (regimed retrain, or the schedule)%s",
                    no_champion_cause(store),
                )
            clean = False
            deadline = None if timeout_s is None else started + timeout_s
            try:
                if not self.stop_event.is_set():  # a stop during start-up: no catch-up run
                    self.retrains.start(store)
                # READY before Kafka answers: the wait for a broker must not fail the start.
                self.notifier.ready()
                if self._connect(consumer, deadline) and self.state is State.STARTING:
                    self.state = State.RUNNING
                    logger.info(
                        "regimed running (start-up took %.2fs)", time.monotonic() - started
                    )
                consumed = 0
                while self.state is State.RUNNING and not self.stop_event.is_set():
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
                    self._check_market(consumer, ingest)
                clean = True
            finally:
                self.state = State.STOPPING
                self.notifier.stopping()
                if publisher is not None:
                    publisher.request_stop()  # its send in hand ends while the consumer closes
                consumer.close(commit=clean)
        self.state = State.STOPPED
        logger.info("regimed stopped")

    def _start_publisher(self, stack: ExitStack) -> Publisher | None:
        """The thread that publishes the output topics (docs/outputs.md), when one is on;
        stopped after the consumer."""
        if not self.config.outputs.enabled:
            return None
        publisher = Publisher(self.config, self.metrics)
        publisher.start()
        stack.callback(publisher.stop)
        return publisher

    def _connect(self, consumer: MarketDataConsumer, deadline: float | None) -> bool:
        """Open the consumer, retrying with capped exponential backoff while no broker
        answers; False when stopped (or past `deadline`) before Kafka could be reached."""
        servers = ",".join(self.config.kafka.bootstrap_servers)
        backoff = Backoff(CONNECT_BACKOFF_S, CONNECT_BACKOFF_CAP_S)
        while not self.stop_event.is_set():
            try:
                consumer.open()
                if backoff.attempts:
                    logger.info("Kafka at %s answers: consuming", servers)
                return True
            except (ConsumerError, DeadLetterError) as exc:
                consumer.close(commit=False)  # whatever the attempt had opened
                delay = backoff.next()
                self._waiting = f"waiting for Kafka at {servers} (attempt {backoff.attempts})"
                logger.warning(
                    "Kafka at %s is not reachable (attempt %d, next in %.0f s): %s",
                    servers,
                    backoff.attempts,
                    delay,
                    exc,
                )
                self.notifier.notify(
                    f"STATUS=waiting for Kafka at {servers}: attempt {backoff.attempts} "
                    f"failed, next in {delay:.0f} s"
                )
                if not self._pause(delay, deadline):
                    return False
        return False

    def _pause(self, seconds: float, deadline: float | None) -> bool:
        """Wait `seconds` (pinging the watchdog); False when stopped or past `deadline`."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self.stop_event.wait(min(left, 1.0)):
                return False
            self.notifier.watchdog()
        return deadline is None or time.monotonic() < deadline

    def _check_market(self, consumer: MarketDataConsumer, ingest: Ingest) -> None:
        """Warn once, and set `regimed_market_symbol_missing`, when records arrive but none
        of `regime.market_symbol` within `regime.market_symbol_timeout_minutes`: without it
        there is no market regime and no drift check."""
        r = self.config.regime
        since = consumer.first_record_at
        if ingest.market_seen or since is None or r.market_symbol_timeout_minutes <= 0:
            self.metrics.market_symbol_missing.set(0)
            return
        waited = time.monotonic() - since
        if waited < r.market_symbol_timeout_minutes * 60:
            return
        self.metrics.market_symbol_missing.set(1)
        if not self._market_warned:
            self._market_warned = True
            seen = sorted(consumer.partition_of)
            logger.warning(
                "regime.market_symbol = %r: no bar of it in %.1f min of consuming (symbols "
                "seen: %s); there is no market regime and no drift check until one arrives",
                r.market_symbol,
                waited / 60,
                ", ".join(seen[:20]) + (f" and {len(seen) - 20} more" if len(seen) > 20 else ""),
            )

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
        if self.regime_alerts is not None:
            self.regime_alerts.watched = frozenset(self.config.alerts.regime_change)
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
        broker = consumer.broker
        away = f"Kafka at {broker.servers} does not answer; " if broker.away else ""
        self.notifier.notify(f"STATUS={away}{stored}; {model}")

    def _serve_metrics(self, stack: ExitStack, consumer: MarketDataConsumer) -> None:
        m = self.config.metrics

        def health() -> tuple[bool, str]:
            idle = time.monotonic() - consumer.last_progress
            if self.state is State.STARTING:
                return False, self._waiting
            if self.state is not State.RUNNING:
                return False, f"state {self.state.value}"
            if consumer.held is not None:
                return False, f"polling paused: {consumer.held}"
            if idle > m.healthz_stall_seconds:
                return False, f"consume loop stalled: no poll for {idle:.0f} s"
            if consumer.broker.away:
                silence = consumer.broker.silence_s()
                return False, f"Kafka at {consumer.broker.servers}: no answer for {silence:.0f} s"
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
