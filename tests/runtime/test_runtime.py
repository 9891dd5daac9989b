"""The whole daemon: consuming through a retrain, hot-swapping the champion, scoring live rows,
drift-triggered retrains with alerts, and every contract metric on /metrics.

Real parts throughout: the embedded broker, the bundled history, retrains in a child process,
a local webhook server and promtool."""

from __future__ import annotations

import dataclasses
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.replay import publish
from daemon.config import AlertsConfig, Config, RegimeConfig
from daemon.config.drift import DriftConfig
from daemon.config.settings import Secret
from daemon.registry.versions import Registry
from daemon.runtime.service import Service
from daemon.store.sqlite import Store
from daemon.training.trainer import retrain
from tests.factories import Running, bars_stored, chunk, scrape, wait_for

pytestmark = pytest.mark.integration

#: The metric names docs/metrics.md promises dashboards and alert rules (all prefixed
#: regimed_); counters are exposed with _total.
CONTRACT = (
    "events_consumed_total",
    "events_rejected_total",
    "consumer_lag_messages",
    "bars_labeled_total",
    "samples_stored",
    "market_regime",
    "live_accuracy",
    "live_balanced_accuracy",
    "validation_accuracy",
    "validation_balanced_accuracy",
    "feature_drift_psi",
    "drift_score",
    "retrain_runs_total",
    "retrain_duration_seconds",
    "retrain_peak_rss_bytes",
    "retrain_last_success_timestamp_seconds",
    "next_retrain_timestamp_seconds",
    "model_info",
    "vix_proxy_in_use",
)



class Webhook:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                owner.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever)

    def events(self) -> list[str]:
        return [b["event"] for b in self.bodies]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()
    hook.thread.join(timeout=5)


@pytest.fixture
def daemon_config(kafka_config, webhook) -> Config:
    """The test broker, the bundled index as the market, a one-model retrain, alerts on; the
    gate's naive-edge rule is relaxed so the first candidate is promoted (this is about the
    runtime, not about beating a coin toss on a few years of one index)."""
    return kafka_config.replace(
        regime=RegimeConfig(market_symbol="^GSPC"),
        gate=dataclasses.replace(kafka_config.gate, min_edge=-1.0),
        training=dataclasses.replace(kafka_config.training, models=("logistic_regression",)),
        alerts=AlertsConfig(webhooks=(Secret(webhook.url),), timeout_seconds=5.0),
    )


def test_the_daemon_keeps_consuming_through_a_retrain_and_scores_with_the_new_champion(
    daemon_config, webhook
):
    config = daemon_config
    first = chunk("2009-01-01", "2016-12-31")
    second = chunk("2017-01-01", "2017-12-31")
    third = chunk("2018-01-01", "2018-12-31")
    publish(config.kafka, first, progress=False)
    with Running(config) as service:
        # 503 while starting (the store's writer process starts with the consumer), then 200.
        wait_for(lambda: scrape(service, "/healthz")[0] == 200, 30, "a healthy daemon")
        wait_for(lambda: bars_stored(config) == len(first), 120, "the first chunk")
        text = scrape(service)[1]
        assert "regimed_champion_present 0.0" in text  # no champion yet: nothing is scored
        assert service.retrains is not None and service.scorer is not None
        assert service.retrains.trigger("manual")
        before = bars_stored(config)
        publish(config.kafka, second, progress=False)
        result = wait_for(lambda: service.retrains.results, 180, "the retrain")[0]
        during = bars_stored(config)
        assert result.outcome in ("promoted", "rejected"), result.reason
        # The consumer kept storing while the retrain ran in its own process.
        assert during > before
        assert result.duration_seconds > 0
        if result.outcome != "promoted":
            pytest.fail(f"the first candidate should beat the naive references: {result.reason}")
        wait_for(lambda: service.scorer.version == result.version, 30, "the hot swap")
        publish(config.kafka, third, progress=False)
        total = len(first) + len(second) + len(third)
        wait_for(lambda: bars_stored(config) == total, 120, "the third chunk")
        text = wait_for(
            lambda: next((t for t in [scrape(service)[1]] if "regimed_live_accuracy{" in t), None),
            60,
            "live accuracy",
        )
        assert f'regimed_model_info{{version="{result.version}"}} 1.0' in text
        # the retrain child's peak memory, from its report, on /metrics
        assert result.report is not None and result.report.peak_rss_bytes
        gauge = "regimed_retrain_peak_rss_bytes "
        (peak,) = (line for line in text.splitlines() if line.startswith(gauge))
        assert float(peak.split()[1]) == result.report.peak_rss_bytes
        assert 'regimed_validation_balanced_accuracy{model="ensemble",regime="overall"}' in text
        with (
            Store.open(config.store, read_only=True) as store,
            store.transaction("count", write=False) as conn,
        ):
            scored = conn.execute(
                "SELECT count(*) FROM predictions WHERE model_version = ? AND label IS NOT NULL",
                (result.version,),
            ).fetchone()[0]
        assert scored > 100
    assert any(e.startswith("retrain_") for e in webhook.events())


def test_forced_drift_fires_exactly_one_retrain_and_an_alert(daemon_config, webhook):
    config = daemon_config.replace(
        drift=DriftConfig(
            threshold=1e-6, sustain=1, min_live_rows=10, live_window=50, cooldown_hours=24
        )
    )
    first = chunk("2009-01-01", "2016-12-31")
    publish(config.kafka, first, progress=False)
    with Running(config) as service:
        wait_for(lambda: bars_stored(config) == len(first), 120, "the first chunk")
        # A retrain from the command line's code path, while the daemon runs:
        report = retrain(config, trigger="manual").to_json()
        assert report["promoted"], report["reason"]
        assert service.scorer is not None and service.retrains is not None
        wait_for(lambda: service.scorer.version == report["version"], 30, "the hot swap")
        publish(config.kafka, chunk("2017-01-01", "2018-12-31"), progress=False)
        results = wait_for(lambda: service.retrains.results, 180, "the drift retrain")
        wait_for(
            lambda: bars_stored(config) == len(first) + len(chunk("2017-01-01", "2018-12-31")),
            120,
            "the second chunk",
        )
        time.sleep(1)
        text = scrape(service)[1]
        registry = service.metrics.registry
        drift_runs = sum(
            registry.get_sample_value(
                "regimed_retrain_runs_total", {"trigger": "drift", "outcome": o}
            )
            or 0
            for o in ("promoted", "rejected", "failed", "busy", "stopped")
        )
        assert len(results) == 1 and results[0].trigger == "drift", results
        assert drift_runs == 1
        assert (
            registry.get_sample_value("regimed_drift_triggers_total", {"outcome": "started"}) == 1
        )
        suppressed = registry.get_sample_value(
            "regimed_drift_triggers_total", {"outcome": "suppressed_cooldown"}
        )
        assert suppressed and suppressed >= 1
        assert "regimed_drift_score " in text
        wait_for(lambda: "drift" in webhook.events(), 30, "the drift alert")
        wait_for(
            lambda: any(e.startswith("retrain_") for e in webhook.events()),
            30,
            "the retrain alert",
        )
        for name in CONTRACT:
            assert f"regimed_{name}" in text, name
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sighup_reloads_what_the_next_retrain_uses(daemon_config):
    import os
    import signal

    reloaded = daemon_config.replace(
        gate=dataclasses.replace(daemon_config.gate, tolerance=0.02),
        kafka=dataclasses.replace(daemon_config.kafka, max_poll_records=100),
    )
    service = Service(daemon_config, reload=lambda: reloaded)
    thread = threading.Thread(target=service.run, kwargs={"timeout_s": 120})
    with service.signals():
        thread.start()
        try:
            wait_for(lambda: service.state.value == "running", 60, "the service")
            os.kill(os.getpid(), signal.SIGHUP)
            wait_for(lambda: service.config.gate.tolerance == 0.02, 30, "the reload")
            assert service.retrains is not None
            assert service.retrains.runner.config.gate.tolerance == 0.02
            # [kafka] needs a restart: unchanged, and logged as such
            assert service.config.kafka.max_poll_records == daemon_config.kafka.max_poll_records
        finally:
            service.request_stop()
            thread.join(timeout=40)
    assert not thread.is_alive()


def test_a_stop_during_a_retrain_ends_the_retrain_keeps_the_champion_and_exits_in_time(
    daemon_config,
):
    # The default eight models: a retrain that is still fitting when the stop comes.
    config = daemon_config.replace(
        training=dataclasses.replace(daemon_config.training, models=Config().training.models)
    )
    first = chunk("2005-01-01", "2016-12-31")
    publish(config.kafka, first, progress=False)
    runner = Running(config)
    with runner as service:
        wait_for(lambda: bars_stored(config) == len(first), 120, "the first chunk")
        assert service.retrains is not None
        assert service.retrains.trigger("schedule")
        wait_for(lambda: service.retrains.scheduler.running, 30, "the retrain to start")
        time.sleep(2.0)
        assert not service.retrains.results, "the retrain ended before the stop"
        stopped_at = time.monotonic()
        service.request_stop()
        runner.thread.join(timeout=30)
        assert not runner.thread.is_alive()
        assert time.monotonic() - stopped_at < 30
    (result,) = service.retrains.results
    assert result.outcome == "stopped"
    with Store.open(config.store, read_only=True) as store:
        assert Registry(store).champion() is None and Registry(store).models() == []
