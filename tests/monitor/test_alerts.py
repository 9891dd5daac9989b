"""Alerts reach real webhooks (a local HTTP server) and a failing webhook never raises."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from daemon.config import AlertsConfig, Secret
from daemon.monitor.alerts import ATTEMPTS, RETRY_PAUSE_S, send_alert, webhook_host
from tests.factories import Clock, WebhookServer, serve_webhooks


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with serve_webhooks() as server:
        yield server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alerts(*urls: str, timeout: float = 2.0) -> AlertsConfig:
    return AlertsConfig(webhooks=tuple(Secret(u) for u in urls), timeout_seconds=timeout)


def test_an_alert_reaches_every_webhook_as_json(webhook):
    config = alerts(webhook.url("/ok/one"), webhook.url("/ok/two?token=abc"))
    delivered = send_alert(config, "artifact_refused", "model v1: refused", {"version": "v1"})
    assert delivered == 2
    assert [path for path, _, _ in webhook.received] == ["/ok/one", "/ok/two?token=abc"]
    _, headers, body = webhook.received[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("regimed/")
    assert body["event"] == "artifact_refused"
    assert body["summary"] == "model v1: refused"
    assert body["details"] == {"version": "v1"}
    assert body["source"] == "regimed"
    assert body["text"] == f"regimed on {body['host']}: model v1: refused"
    assert body["time"].endswith("+00:00")


def test_no_webhooks_sends_nothing():
    assert send_alert(AlertsConfig(), "x", "y", {}) == 0


def test_failing_webhooks_are_counted_logged_by_host_and_never_raise(webhook, caplog):
    secret = "T0KEN-do-not-log"
    dead = f"http://127.0.0.1:{closed_port()}/hooks/{secret}"
    config = alerts(webhook.url(f"/fail/{secret}"), dead, webhook.url("/ok"))
    with caplog.at_level(logging.WARNING, logger="daemon.monitor.alerts"):
        delivered = send_alert(config, "artifact_verification_failed", "bad", {"n": 1})
    assert delivered == 1
    # every failing webhook is tried ATTEMPTS times (bounded), the good one once
    assert webhook.events() == ["artifact_verification_failed"] * (ATTEMPTS + 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 * ATTEMPTS
    assert "HTTP status 500" in messages[0]
    assert f"webhook at 127.0.0.1:{webhook.base.rsplit(':', 1)[1]} failed" in messages[0]
    assert f"(attempt {ATTEMPTS} of {ATTEMPTS})" in messages[ATTEMPTS - 1]
    assert all("failed" in m for m in messages)
    assert secret not in caplog.text


def test_a_slow_webhook_times_out_and_the_next_one_still_gets_the_alert(webhook, caplog):
    webhook.slow_seconds = 0.6
    config = alerts(webhook.url("/slow"), webhook.url("/ok"), timeout=0.1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="daemon.monitor.alerts"):
        delivered = send_alert(config, "e", "s", {})
    assert delivered == 1
    # bounded: each try waits at most the timeout, with short pauses between the tries
    bound = ATTEMPTS * (0.1 + 0.2) + RETRY_PAUSE_S * ATTEMPTS * (ATTEMPTS - 1) / 2
    assert time.monotonic() - started < bound + 0.5
    assert "timed out" in caplog.text


def test_details_that_are_not_json_are_sent_as_text(webhook):
    import datetime as dt

    when = dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC)
    assert send_alert(alerts(webhook.url("/ok")), "e", "s", {"when": when}) == 1
    assert webhook.received[0][2]["details"] == {"when": "2024-01-06 21:00:00+00:00"}


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "hooks.slack.com"),
        ("http://user:pw@alerts.internal:8080/x?token=1", "alerts.internal:8080"),
        ("http://[::1]:99999/x", "?"),
    ],
)
def test_only_the_host_of_a_webhook_is_shown(url, host):
    assert webhook_host(url) == host


def test_the_same_alert_goes_out_once_per_repeat_interval(webhook):
    from daemon.monitor.alerts import Alerter

    clock = Clock()
    config = dataclasses.replace(alerts(webhook.url("/ok")), repeat_interval="1h")
    alerter = Alerter(config, clock=clock)
    assert alerter.send("artifact_refused", "v1 refused", {}, cause="v1 bad hash") == 1
    clock.now += 3599
    assert alerter.send("artifact_refused", "v1 refused", {}, cause="v1 bad hash") is None
    # another cause, or another event, is news
    assert alerter.send("artifact_refused", "v2 refused", {}, cause="v2 bad hash") == 1
    assert alerter.send("retrain_failed", "failed", {}, cause="v1 bad hash") == 1
    clock.now += 1
    assert alerter.send("artifact_refused", "v1 refused", {}, cause="v1 bad hash") == 1
    assert webhook.events() == [
        "artifact_refused",
        "artifact_refused",
        "retrain_failed",
        "artifact_refused",
    ]


def test_an_alert_no_webhook_took_is_tried_again_next_time(webhook):
    from daemon.monitor.alerts import Alerter

    alerter = Alerter(alerts(webhook.url("/fail")), clock=Clock())
    assert alerter.send("drift", "drift", {}, cause="feature_drift") == 0
    assert alerter.send("drift", "drift", {}, cause="feature_drift") == 0
    assert len(webhook.received) == 2 * ATTEMPTS
