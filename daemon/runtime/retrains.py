"""The daemon's retrains: the weekly schedule, drift triggers and the catch-up of a missed run,
all through one APScheduler job (so `max_instances=1` guards them all), each run in a child
process; after every run the metrics are updated and an alert goes to the webhooks.

Callbacks run on the scheduler's worker thread; they touch the metrics and the webhooks only,
never the consumer's store connection (the registry read at start-up uses its own).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from daemon.config import Config
from daemon.monitor.alerts import Alerter
from daemon.monitor.metrics import RETRAIN_TRIGGERS, Metrics
from daemon.registry.versions import ARTIFACT_REFUSED, Registry
from daemon.runtime.retrain_runner import RetrainRunner, RunResult
from daemon.runtime.scheduler import JobEvent, RetrainScheduler, last_success
from daemon.store.sqlite import Store
from daemon.training.window import RetrainWindow

logger = logging.getLogger(__name__)


class Retrains:
    """Schedules, triggers and reports the daemon's retrains."""

    def __init__(self, config: Config, metrics: Metrics, stop: threading.Event) -> None:
        self.config = config
        self.metrics = metrics
        self.runner = RetrainRunner(config, stop=stop, process=config.retrain)
        self.scheduler = RetrainScheduler(config.schedule, self.runner)
        self.scheduler.on_result(self._on_result)
        self.scheduler.on_event(self._on_event)
        self.rejections = 0
        #: Whether a champion scores live rows (the service sets it from its scorer).
        self.champion_serving: Callable[[], bool] = lambda: True
        self.results: list[RunResult] = []
        self._lock = threading.Lock()
        # Alerts go out on their own thread: a slow webhook never holds up the consumer or
        # the scheduler.
        self.alerter = Alerter(config.alerts)
        self._alerts: queue.Queue[tuple[str, str, dict[str, Any], str] | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_alerts, name="alerts")
        self._sender.start()

    def start(self, store: Store) -> None:
        """Start the schedule; restore the gauges from the registry; catch up a missed run."""
        self.rejections = _trailing_rejections(store)
        self.metrics.retrain_consecutive_rejections.set(self.rejections)
        run = Registry(store).last_retrain_run()
        if run is not None and run.version is not None:
            self.metrics.retrain_last_success.set(run.finished_at.timestamp())
        self.scheduler.start()
        self._set_next()
        self.scheduler.catch_up(last_success(store))

    def reconfigure(self, config: Config) -> None:
        """Use `config` from the next retrain on (SIGHUP): the child gets it whole."""
        self.config = config
        self.runner.config = config
        self.alerter.config = config.alerts

    def trigger(self, name: str) -> bool:
        """Start a retrain now (False, and counted, when one is already running)."""
        return self.scheduler.trigger(name)

    def drift(self, reason: str) -> bool:
        """A drift retrain (`reason`: feature_drift or concept_drift), with its alert."""
        detected = RetrainWindow.drift(dt.datetime.now(dt.UTC))
        started = self.scheduler.trigger("drift", detected)
        summary = (
            f"drift retrain started ({reason})"
            if started
            else f"drift detected ({reason}); a retrain is already running"
        )
        self._alert("drift", summary, {"reason": reason, "started": started}, f"{reason} {started}")
        return started

    def refused(self, version: str, problem: str) -> None:
        """The champion's artifact was refused on loading: alert (repeats are suppressed)."""
        self._alert(
            ARTIFACT_REFUSED,
            f"model {version}: artifact refused during loading",
            {"version": version, "problems": [problem]},
            f"{version} {problem}",
        )

    def alert(self, event: str, summary: str, details: dict[str, Any], cause: str) -> None:
        """Queue an alert for the webhooks (sent on the alerts thread; repeats of the same
        event and cause within `alerts.repeat_interval` are suppressed)."""
        self._alert(event, summary, details, cause)

    def close(self, timeout: float = 25.0) -> None:
        """Stop the schedule; a running retrain is terminated (the champion stays)."""
        self.runner.stop()
        if not self.scheduler.shutdown(wait=True, timeout=timeout):
            logger.warning("the retrain scheduler did not stop within %.0f s", timeout)
        self._alerts.put(None)
        self._sender.join(timeout=5 + 3 * self.config.alerts.timeout_seconds)

    # -- callbacks (scheduler thread) --------------------------------------------------------

    def _on_result(self, result: RunResult) -> None:
        with self._lock:
            self.results.append(result)
        trigger = result.trigger if result.trigger in RETRAIN_TRIGGERS else "manual"
        self.metrics.retrain_runs.labels(trigger=trigger, outcome=result.outcome).inc()
        if result.outcome in ("promoted", "rejected", "unchanged", "failed"):
            self.metrics.retrain_duration.set(result.duration_seconds)
        if result.report is not None and result.report.peak_rss_bytes is not None:
            self.metrics.retrain_peak_rss.set(result.report.peak_rss_bytes)
        if result.outcome in ("promoted", "rejected", "unchanged"):
            self.metrics.retrain_last_success.set(dt.datetime.now(dt.UTC).timestamp())
        if result.outcome == "promoted":
            self.rejections = 0
        elif result.outcome == "rejected":
            self.rejections += 1
        self.metrics.retrain_consecutive_rejections.set(self.rejections)
        self._set_next()
        if result.already_run is not None:  # the group's run: its time, its alert (sent there)
            self.metrics.retrain_last_success.set(result.already_run.finished_at.timestamp())
            return
        if result.outcome == "stopped":
            return
        if result.outcome != "promoted" and not self.champion_serving():
            logger.warning(
                "no champion: live bars are stored and labelled but not scored until a retrain "
                "shows skill; last retrain %s: %s",
                result.outcome,
                result.reason,
            )
        report = {} if result.report is None else result.report.to_json()
        summary = (
            f"retrain {result.outcome} ({result.trigger}, {result.duration_seconds:.0f} s)"
            f"{': ' + result.reason if result.reason else ''}"
        )
        cause = result.version if result.outcome == "promoted" else result.reason
        self._alert(f"retrain_{result.outcome}", summary, {"report": report}, cause or "")

    def _on_event(self, event: JobEvent) -> None:
        kind = event.kind if event.kind in ("missed", "skipped", "error") else None
        if kind is not None:
            self.metrics.scheduler_jobs.labels(kind=kind).inc()

    def _set_next(self) -> None:
        when = self.scheduler.next_run_time()
        if when is not None:
            self.metrics.next_retrain.set(when.timestamp())

    def _alert(self, event: str, summary: str, details: dict[str, Any], cause: str) -> None:
        if self.config.alerts.webhooks:
            self._alerts.put((event, summary, details, cause))

    def _send_alerts(self) -> None:
        while (item := self._alerts.get()) is not None:
            event, summary, details, cause = item
            sent = self.alerter.send(event, summary, details, cause)
            if sent is None:
                self.metrics.alerts_sent.labels(outcome="suppressed").inc()
                continue
            self.metrics.alerts_sent.labels(outcome="sent").inc(sent)
            failed = len(self.config.alerts.webhooks) - sent
            if failed:
                self.metrics.alerts_sent.labels(outcome="failed").inc(failed)


def _trailing_rejections(store: Store) -> int:
    """Candidates rejected since the last promoted one, from the registry (for the alert on
    rejections in a row, across restarts)."""
    n = 0
    for model in reversed(Registry(store).models()):
        if model.status == "rejected":
            n += 1
        else:
            break
    return n
