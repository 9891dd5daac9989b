"""What the daemon says after a retrain: the metrics by outcome, the alert in words, and the
warning when no champion serves."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest

from daemon.config import Config
from daemon.monitor.metrics import Metrics
from daemon.registry.records import RetrainRun
from daemon.runtime.retrain_runner import RunResult
from daemon.runtime.retrains import Retrains
from daemon.training.report import RetrainReport

REASON = (
    "no skill shown: balanced accuracy +0.024 [-0.011, +0.058] over always up (the lower "
    "bound must be above min_edge 0)"
)


@pytest.fixture
def retrains():
    metrics = Metrics.create()
    made = Retrains(Config(), metrics, threading.Event())
    sent: list[tuple[str, str]] = []
    made._alert = lambda event, summary, details, cause: sent.append((event, summary))  # type: ignore[method-assign]
    made.sent = sent  # type: ignore[attr-defined]
    yield made
    made.close(timeout=5)


def _result(outcome: str, reason: str) -> RunResult:
    report = RetrainReport(trigger="schedule", promoted=False, reason=reason, outcome=outcome)
    return RunResult("schedule", outcome, 12.0, report=report, reason=reason)  # type: ignore[arg-type]


def test_without_a_champion_a_rejected_retrain_says_why_nothing_serves(retrains, caplog):
    retrains.champion_serving = lambda: False
    with caplog.at_level(logging.WARNING, logger="daemon.runtime.retrains"):
        retrains._on_result(_result("rejected", REASON))
    assert "no champion: live bars are stored and labelled but not scored" in caplog.text
    assert REASON in caplog.text
    ((event, summary),) = retrains.sent
    assert event == "retrain_rejected"
    assert summary == f"retrain rejected (schedule, 12 s): {REASON}"


def test_an_unchanged_retrain_is_counted_as_such_and_not_as_a_rejection(retrains, caplog):
    with caplog.at_level(logging.WARNING, logger="daemon.runtime.retrains"):
        retrains._on_result(_result("unchanged", "unchanged: ...; no version added"))
    assert caplog.text == ""  # a champion serves (the default): nothing to warn about
    registry = retrains.metrics.registry
    runs = registry.get_sample_value(
        "regimed_retrain_runs_total", {"trigger": "schedule", "outcome": "unchanged"}
    )
    assert runs == 1.0
    assert retrains.rejections == 0
    assert registry.get_sample_value("regimed_retrain_last_success_timestamp_seconds") > 0
    assert retrains.sent[0][0] == "retrain_unchanged"


def test_a_window_the_group_served_counts_its_run_as_the_last_success_and_alerts_nothing(
    retrains, caplog
):
    finished = dt.datetime(2026, 12, 6, 2, 5, tzinfo=dt.UTC)
    served = RetrainRun(7, "v7", "schedule", finished - dt.timedelta(minutes=5), finished, True, "")
    result = RunResult("schedule", "already_run", 2.0, reason="...", already_run=served)
    with caplog.at_level(logging.WARNING, logger="daemon.runtime.retrains"):
        retrains._on_result(result)
    assert caplog.text == "" and retrains.sent == []  # the daemon that trained alerted
    registry = retrains.metrics.registry
    runs = registry.get_sample_value(
        "regimed_retrain_runs_total", {"trigger": "schedule", "outcome": "already_run"}
    )
    assert runs == 1.0
    last = registry.get_sample_value("regimed_retrain_last_success_timestamp_seconds")
    assert last == finished.timestamp()


def test_the_peak_memory_of_the_last_retrain_that_reports_one_is_the_gauge(retrains):
    registry = retrains.metrics.registry
    assert registry.get_sample_value("regimed_retrain_peak_rss_bytes") == 0.0
    report = RetrainReport(trigger="schedule", outcome="rejected", peak_rss_bytes=512 * 2**20)
    retrains._on_result(RunResult("schedule", "rejected", 12.0, report=report, reason=REASON))
    assert registry.get_sample_value("regimed_retrain_peak_rss_bytes") == 512 * 2**20
    retrains._on_result(RunResult("schedule", "busy", 0.0, reason="another retrain"))
    assert registry.get_sample_value("regimed_retrain_peak_rss_bytes") == 512 * 2**20
