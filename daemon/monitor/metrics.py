"""The Prometheus metrics of regimed, on a registry of their own (no global state).

Names follow the contract in docs/metrics.md; no label takes unbounded values (no symbols).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from daemon.config import MetricsConfig
from daemon.config.training import MODEL_NAMES
from daemon.domain import REGIMES, REJECTION_REASONS
from daemon.errors import ListenError

if TYPE_CHECKING:
    from daemon.monitor.live import DriftOutcome

#: What can start a retrain, and how a retrain can end (bounded label values).
RETRAIN_TRIGGERS = ("schedule", "drift", "manual", "catch_up", "demo")
RETRAIN_OUTCOMES = (
    "promoted", "rejected", "unchanged", "failed", "busy", "already_run", "stopped",
)  # fmt: skip
#: The `model` label of the validation gauges: the base models and the ensemble.
MODEL_LABELS = (*MODEL_NAMES, "ensemble")
#: The freshness gauges, by name (they only move forward: `Metrics.observe_freshness`).
_LAST_EVENT = "regimed_last_event_timestamp_seconds"
_NEWEST_BAR = "regimed_newest_bar_timestamp_seconds"


@dataclass(frozen=True)
class Metrics:
    """Every metric regimed exports, bound to one registry."""

    registry: CollectorRegistry
    events_consumed: Counter
    events_rejected: Counter
    dead_letters_parked: Counter
    consumer_lag: Gauge
    bars_labeled: Counter
    bars_out_of_order: Counter
    bars_corrected: Counter
    samples_stored: Gauge
    market_regime: Gauge
    vix_proxy_in_use: Gauge
    market_symbol_missing: Gauge
    batches_committed: Counter
    rows_withheld: Counter
    outbox_pending: Gauge
    output_records_published: Counter
    last_event: Gauge
    newest_bar: Gauge
    live_accuracy: Gauge
    live_balanced_accuracy: Gauge
    live_scored: Counter
    live_window_rows: Gauge
    predictions_made: Counter
    champion_present: Gauge
    model_info: Gauge
    validation_accuracy: Gauge
    validation_balanced_accuracy: Gauge
    feature_drift_psi: Gauge
    drift_score: Gauge
    drift_checks: Counter
    drift_triggers: Counter
    concept_drift_detections: Counter
    retrain_runs: Counter
    retrain_duration: Gauge
    retrain_peak_rss: Gauge
    retrain_last_success: Gauge
    retrain_consecutive_rejections: Gauge
    next_retrain: Gauge
    scheduler_jobs: Counter
    alerts_sent: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """Register every metric on `registry` (a fresh one by default)."""
        reg = registry or CollectorRegistry(auto_describe=True)
        m = cls(
            registry=reg,
            events_consumed=Counter(
                "regimed_events_consumed",
                "Kafka records consumed (valid or not)",
                ["topic"],
                registry=reg,
            ),
            events_rejected=Counter(
                "regimed_events_rejected",
                "Records rejected by validation and sent to the dead-letter topic",
                ["reason"],
                registry=reg,
            ),
            consumer_lag=Gauge(
                "regimed_consumer_lag_messages",
                "Records between the consumer position and the partition end",
                ["partition"],
                registry=reg,
            ),
            bars_labeled=Counter(
                "regimed_bars_labeled",
                "Bars labelled with a regime by the streaming path",
                ["regime"],
                registry=reg,
            ),
            dead_letters_parked=Counter(
                "regimed_dead_letters_parked",
                "Rejected records the dead-letter topic did not take, parked in the store",
                registry=reg,
            ),
            bars_out_of_order=Counter(
                "regimed_bars_out_of_order",
                "Bars older than their symbol's last bar: stored, not fed to the online state",
                registry=reg,
            ),
            bars_corrected=Counter(
                "regimed_bars_corrected",
                "Bars that replaced a stored bar of the same symbol and day with new values",
                registry=reg,
            ),
            samples_stored=Gauge(
                "regimed_samples_stored",
                "Samples in the store by source (live, archive) and regime",
                ["source", "regime"],
                registry=reg,
            ),
            market_regime=Gauge(
                "regimed_market_regime",
                "1 for the current regime of the market symbol, 0 for the others",
                ["regime"],
                registry=reg,
            ),
            vix_proxy_in_use=Gauge(
                "regimed_vix_proxy_in_use",
                "1 when the market symbol's last bar used the VIX proxy instead of the VIX",
                registry=reg,
            ),
            market_symbol_missing=Gauge(
                "regimed_market_symbol_missing",
                "1 when records arrive but none of regime.market_symbol for "
                "regime.market_symbol_timeout_minutes",
                registry=reg,
            ),
            batches_committed=Counter(
                "regimed_batches_committed",
                "Polled batches written to SQLite in one transaction",
                registry=reg,
            ),
            rows_withheld=Counter(
                "regimed_feature_rows_withheld",
                "Bars that gave no feature row (not enough history, no regime or no VIX)",
                registry=reg,
            ),
            outbox_pending=Gauge(
                "regimed_outbox_pending_records",
                "Records for the output topics stored but not yet acknowledged by Kafka",
                registry=reg,
            ),
            output_records_published=Counter(
                "regimed_output_records_published",
                "Records of the output topics acknowledged by Kafka (copies sent again after "
                "a restart count again)",
                ["topic"],
                registry=reg,
            ),
            last_event=Gauge(
                _LAST_EVENT,
                "Wall time when the newest Kafka record was consumed (valid or not), kept in "
                "the store across restarts; 0 before the first record",
                registry=reg,
            ),
            newest_bar=Gauge(
                _NEWEST_BAR,
                "The trading day of the newest stored bar (00:00 UTC); 0 before the first bar",
                registry=reg,
            ),
            **_model_metrics(reg),
        )
        # CPU, resident memory, open files and start time of this process (process_*), for
        # the dashboard's process panels; a restart shows as a new process_start_time_seconds.
        ProcessCollector(registry=reg)
        for regime in REGIMES:
            m.market_regime.labels(regime=regime).set(0)
        m.champion_present.set(0)
        # Every (trigger, outcome) exists from the start: a series that first appears at 1
        # shows no increase(), and the first failure would not alert.
        for trigger in RETRAIN_TRIGGERS:
            for outcome in RETRAIN_OUTCOMES:
                m.retrain_runs.labels(trigger=trigger, outcome=outcome)
        # Every reason exists at 0, so the first burst of dead letters shows in rate().
        for reason in REJECTION_REASONS:
            m.events_rejected.labels(reason=reason)
        for kind in ("missed", "skipped", "error"):
            m.scheduler_jobs.labels(kind=kind)
        for outcome in ("started", "skipped_busy", "suppressed_cooldown"):
            m.drift_triggers.labels(outcome=outcome)
        for outcome in ("sent", "failed", "suppressed"):
            m.alerts_sent.labels(outcome=outcome)
        return m

    def observe_live(
        self, scores: Mapping[str, Mapping[str, Any]], scored: Mapping[str, int]
    ) -> None:
        """Rolling live accuracy per regime (`LiveScorer.live_scores()`) and the rows just
        scored per regime."""
        for regime, n in scored.items():
            self.live_scored.labels(regime=regime).inc(n)
        for regime, cell in scores.items():
            self.live_window_rows.labels(regime=regime).set(cell["window"])
            for gauge, key in (
                (self.live_accuracy, "accuracy"),
                (self.live_balanced_accuracy, "balanced_accuracy"),
            ):
                value = cell.get(key)
                if value is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(regime)
                else:
                    gauge.labels(regime=regime).set(float(value))

    def observe_drift(self, outcome: DriftOutcome) -> None:
        """One drift check and what its trigger did."""
        self.drift_checks.inc()
        check = outcome.check
        if check.ready:
            self.drift_score.set(float(check.score))
            for feature, value in check.feature_psi.items():
                self.feature_drift_psi.labels(feature=feature).set(float(value))
        if outcome.concept_drift:
            self.concept_drift_detections.inc()
        if outcome.trigger is not None:
            self.drift_triggers.labels(outcome=outcome.trigger).inc()

    def set_model(self, version: str | None, report: Mapping[str, Any] | None) -> None:
        """Show `version` as the champion (model_info 1, its validation scores), or none."""
        self.model_info.clear()
        self.validation_accuracy.clear()
        self.validation_balanced_accuracy.clear()
        self.champion_present.set(0 if version is None else 1)
        if version is None:
            return
        self.model_info.labels(version=version).set(1)
        validation = (report or {}).get("validation") or {}
        models = dict(validation.get("models") or {})
        for model, cell in models.items():
            if model not in MODEL_LABELS:
                continue
            per_regime = dict(cell.get("per_regime") or {})
            per_regime["overall"] = {
                "accuracy": cell.get("accuracy"),
                "balanced_accuracy": cell.get("balanced_accuracy"),
            }
            for regime, scores in per_regime.items():
                if regime not in (*REGIMES, "overall"):
                    continue
                for gauge, key in (
                    (self.validation_accuracy, "accuracy"),
                    (self.validation_balanced_accuracy, "balanced_accuracy"),
                ):
                    value = (scores or {}).get(key)
                    if value is not None:
                        gauge.labels(regime=regime, model=model).set(float(value))

    def observe_freshness(self, event_seconds: float | None, newest_day: str | None) -> None:
        """Move the freshness gauges forward to `event_seconds` (wall time of the newest
        consumed record) and `newest_day` (YYYY-MM-DD of the newest bar); never back."""
        shown = self.registry.get_sample_value
        if event_seconds is not None and event_seconds > (shown(_LAST_EVENT) or 0.0):
            self.last_event.set(event_seconds)
        if newest_day is not None:
            day = dt.datetime.fromisoformat(newest_day).replace(tzinfo=dt.UTC).timestamp()
            if day > (shown(_NEWEST_BAR) or 0.0):
                self.newest_bar.set(day)

    def set_market_regime(self, regime: str | None) -> None:
        """Mark `regime` as the market's current one (all zero when unknown)."""
        for name in REGIMES:
            self.market_regime.labels(regime=name).set(1 if name == regime else 0)


def _model_metrics(reg: CollectorRegistry) -> dict[str, Any]:
    """The metrics of live scoring, drift, retrains and alerts."""
    regime = ["regime"]
    return {
        "live_accuracy": Gauge(
            "regimed_live_accuracy",
            "Accuracy of the champion on the last drift.live_window scored rows of each regime",
            regime,
            registry=reg,
        ),
        "live_balanced_accuracy": Gauge(
            "regimed_live_balanced_accuracy",
            "Balanced accuracy of the champion on the last scored rows of each regime "
            "(absent while the window holds one label only)",
            regime,
            registry=reg,
        ),
        "live_scored": Counter(
            "regimed_live_scored",
            "Live predictions scored against their label, by regime",
            regime,
            registry=reg,
        ),
        "live_window_rows": Gauge(
            "regimed_live_window_rows",
            "Scored rows in the rolling live-accuracy window of each regime",
            regime,
            registry=reg,
        ),
        "predictions_made": Counter(
            "regimed_predictions",
            "Live feature rows scored by the champion",
            registry=reg,
        ),
        "champion_present": Gauge(
            "regimed_champion_present",
            "1 when a champion model scores live rows, 0 before the first promotion",
            registry=reg,
        ),
        "model_info": Gauge(
            "regimed_model_info",
            "1 for the version of the champion model",
            ["version"],
            registry=reg,
        ),
        "validation_accuracy": Gauge(
            "regimed_validation_accuracy",
            "Accuracy of the champion's models on its validation sets, by regime and model",
            ["regime", "model"],
            registry=reg,
        ),
        "validation_balanced_accuracy": Gauge(
            "regimed_validation_balanced_accuracy",
            "Balanced accuracy of the champion's models on its validation sets",
            ["regime", "model"],
            registry=reg,
        ),
        "feature_drift_psi": Gauge(
            "regimed_feature_drift_psi",
            "PSI of each feature: live rows against the champion's training rows of the same "
            "regime, averaged over regimes weighted by live rows",
            ["feature"],
            registry=reg,
        ),
        "drift_score": Gauge(
            "regimed_drift_score",
            "Mean over features of min(PSI, drift.psi_cap); above drift.threshold counts as drift",
            registry=reg,
        ),
        "drift_checks": Counter(
            "regimed_drift_checks", "Drift checks run (one per market trading day)", registry=reg
        ),
        "drift_triggers": Counter(
            "regimed_drift_triggers",
            "Drift retrain triggers by outcome (started, skipped_busy, suppressed_cooldown)",
            ["outcome"],
            registry=reg,
        ),
        "concept_drift_detections": Counter(
            "regimed_concept_drift_detections",
            "Rises of the live error rate detected by ADWIN",
            registry=reg,
        ),
        "retrain_runs": Counter(
            "regimed_retrain_runs",
            "Retrains by trigger and outcome (promoted, rejected, failed, busy, stopped)",
            ["trigger", "outcome"],
            registry=reg,
        ),
        "retrain_duration": Gauge(
            "regimed_retrain_duration_seconds",
            "Duration of the last retrain",
            registry=reg,
        ),
        "retrain_peak_rss": Gauge(
            "regimed_retrain_peak_rss_bytes",
            "Peak resident memory of the last retrain's process (its report's peak_rss_bytes)",
            registry=reg,
        ),
        "retrain_last_success": Gauge(
            "regimed_retrain_last_success_timestamp_seconds",
            "When the last retrain that produced a candidate (promoted or rejected) finished",
            registry=reg,
        ),
        "retrain_consecutive_rejections": Gauge(
            "regimed_retrain_consecutive_rejections",
            "Candidates rejected by the gate in a row since the last promotion",
            registry=reg,
        ),
        "next_retrain": Gauge(
            "regimed_next_retrain_timestamp_seconds",
            "When the next scheduled retrain fires",
            registry=reg,
        ),
        "scheduler_jobs": Counter(
            "regimed_scheduler_jobs",
            "Scheduler events: missed (misfired past the grace time), skipped (a run was "
            "in progress), error",
            ["kind"],
            registry=reg,
        ),
        "alerts_sent": Counter(
            "regimed_alerts",
            "Webhook alert deliveries by outcome (sent, failed; suppressed: a repeat within "
            "alerts.repeat_interval, counted once for all webhooks)",
            ["outcome"],
            registry=reg,
        ),
    }


def serve(
    metrics: Metrics,
    config: MetricsConfig,
    health: Callable[[], tuple[bool, str]] | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Start the HTTP endpoint: /metrics (Prometheus text) and /healthz (200 while `health()`
    says the consumer loop is alive, else 503, with its one-line reason); / names the two, and
    any other path is 404 naming them (a mistyped scrape path fails instead of looking fine).
    HTTPS when `certfile`/`keyfile` are set, client certificates required with
    `client_cafile`. Returns (server, thread) so the caller can shut both down."""
    exporter = make_wsgi_app(metrics.registry)

    def text(start_response: Any, status: str, body: str) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return exporter(environ, start_response)
        if path == "/healthz":
            ok, reason = (True, "ok") if health is None else health()
            status = "200 OK" if ok else "503 Service Unavailable"
            return text(start_response, status, f"{reason}\n")
        if path == "/":
            return text(start_response, "200 OK", f"regimed: {_PATHS}\n")
        return text(start_response, "404 Not Found", f"not found: {path}; {_PATHS}\n")

    class Server(ThreadingWSGIServer):
        daemon_threads = True

    Server.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        server = make_server(config.host, config.port, app, Server, handler_class=_QuietHandler)
    except OSError as exc:
        # Taken, not an address of this machine, or a privileged port: a setting to change.
        raise ListenError(
            f"metrics.port = {config.port}: cannot listen on {config.host}:{config.port}: "
            f"{exc.strerror or exc}"
        ) from None
    if config.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.certfile, config.keyfile)
        if config.client_cafile:
            context.load_verify_locations(config.client_cafile)
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http")
    thread.start()
    return server, thread


#: What the endpoint serves, as its index page and its 404 say.
_PATHS = "/metrics (Prometheus text), /healthz (the consume loop's health)"


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return
