"""Alerts: a JSON POST to every `alerts.webhooks` URL.

The body works as it is with Slack- and Mattermost-style incoming webhooks (`text`) and carries
the structured fields for anything else:

    {"text": "regimed on HOST: SUMMARY", "event": EVENT, "summary": SUMMARY,
     "details": {...}, "host": HOST, "time": ISO 8601 UTC, "source": "regimed"}

Sending never raises: an alert is a side channel, and a dead webhook must not fail a retrain
or a command. The daemon sends through an `Alerter`, which lets the same alert (event and cause)
out at most once per `alerts.repeat_interval`, as Alertmanager's `repeat_interval`
does: a condition that persists is reported, not repeated every few seconds. A failure is
logged as a warning naming the webhook by host only, since webhook
URLs usually carry their token in the path or query.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from daemon import __version__
from daemon.config import AlertsConfig

__all__ = ["Alerter", "send_alert", "webhook_host"]

logger = logging.getLogger(__name__)


#: Tries per webhook and the pause before the second (doubled before the third): bounded, so a
#: dead webhook costs at most ATTEMPTS x timeout + 3 x RETRY_PAUSE_S.
ATTEMPTS = 3
RETRY_PAUSE_S = 0.5


def send_alert(config: AlertsConfig, event: str, summary: str, details: Mapping[str, Any]) -> int:
    """POST the alert to every configured webhook; how many answered with a 2xx status.

    Each request waits at most `alerts.timeout_seconds`. `details` must be JSON-serialisable
    (anything else is sent as its `str`).
    """
    if not config.webhooks:
        return 0
    host = socket.gethostname()
    body = json.dumps(
        {
            "text": f"regimed on {host}: {summary}",
            "event": event,
            "summary": summary,
            "details": dict(details),
            "host": host,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": "regimed",
        },
        default=str,
    ).encode("utf-8")
    delivered = 0
    for secret in config.webhooks:
        url = secret.get_secret_value()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _post(url, body, config.timeout_seconds)
            except Exception as exc:  # any failure of one webhook is logged, never raised
                logger.warning(
                    "alert %s: webhook at %s failed (attempt %d of %d): %s",
                    event,
                    webhook_host(url),
                    attempt,
                    ATTEMPTS,
                    _describe(exc),
                )
                if attempt < ATTEMPTS:
                    time.sleep(RETRY_PAUSE_S * attempt)
            else:
                delivered += 1
                break
    return delivered


class Alerter:
    """`send_alert` with a memory: an alert whose (event, cause) was delivered less than
    `alerts.repeat_interval` ago is suppressed. The memory is this process's: a
    restarted daemon reports a persisting condition once more."""

    def __init__(self, config: AlertsConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._delivered: dict[tuple[str, str], float] = {}

    def send(
        self, event: str, summary: str, details: Mapping[str, Any], cause: str = ""
    ) -> int | None:
        """Send unless it repeats a recent one: how many webhooks took it, None when
        suppressed. An alert no webhook took is not remembered (the next one tries again)."""
        key = (event, cause)
        now = self._clock()
        last = self._delivered.get(key)
        if last is not None and now - last < self.config.repeat_interval_seconds:
            logger.info(
                "alert %s not sent again (the same one went out %.0f s ago): %s",
                event,
                now - last,
                summary,
            )
            return None
        delivered = send_alert(self.config, event, summary, details)
        if delivered:
            self._delivered[key] = now
        return delivered


def webhook_host(url: str) -> str:
    """The host (and port) of a webhook URL: what may be logged of it."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


def _post(url: str, body: bytes, timeout: float) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"regimed/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
            response.read(1024)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response: close it, as the `with` would have
        raise
    if not 200 <= status < 300:
        raise urllib.error.HTTPError(url, status, "not a 2xx status", response.headers, None)


def _describe(exc: BaseException) -> str:
    """What went wrong, without the URL (some exceptions quote it whole)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP status {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return "timed out"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return type(reason).__name__ if isinstance(reason, BaseException) else "unreachable"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
