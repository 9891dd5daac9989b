"""Alerts reach real webhooks (a local HTTP server) and a failing webhook never raises."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from daemon.config import AlertsConfig, Secret
from daemon.monitor.alerts import ATTEMPTS, RETRY_PAUSE_S, send_alert, webhook_host


@dataclass
class WebhookServer:
    """A webhook receiver on 127.0.0.1: POSTs to /ok answer 204, to /fail 500, to /slow after
    `slow_seconds`. `received` holds (path, headers, JSON body) of every request."""

    base: str = ""
    received: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    slow_seconds: float = 0.5

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def events(self) -> list[str]:
        return [body["event"] for _, _, body in self.received]


@contextmanager
def serve_webhooks() -> Iterator[WebhookServer]:
    """Run a `WebhookServer` in a thread; shut down and joined (bounded) on exit."""
    state = WebhookServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((self.path, dict(self.headers), json.loads(body)))
            if self.path.startswith("/slow"):
                time.sleep(state.slow_seconds)
            self.send_response(500 if self.path.startswith("/fail") else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() joins the handler threads
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


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


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
