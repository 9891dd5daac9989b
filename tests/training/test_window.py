"""The window a retrain serves, and the run of the group that served it, read from the registry
of either store backend."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from daemon.registry.records import RetrainRun, retrain_run, retrain_run_row
from daemon.registry.versions import Registry
from daemon.training.window import RetrainWindow, slim_run

UTC = dt.UTC
FIRE = dt.datetime(2024, 1, 6, 21, tzinfo=ZoneInfo("America/New_York"))
MINUTE = dt.timedelta(minutes=1)


def run(
    id: int, started: dt.datetime, finished: dt.datetime, version: str | None, outcome: str
) -> RetrainRun:
    report = {"outcome": outcome, "ran_by": f"regimed-{id} on host{id}", "validation": {}}
    return RetrainRun(id, version, "schedule", started, finished, outcome == "promoted", "", report)


def test_a_firing_is_served_by_a_run_started_at_or_after_it_that_made_a_candidate():
    window = RetrainWindow.scheduled(FIRE)
    before = run(1, FIRE - MINUTE, FIRE + MINUTE, "v1", "promoted")  # started before the firing
    failed = run(2, FIRE, FIRE + MINUTE, None, "failed")
    assert window.served_by([before, failed]) is None
    unchanged = run(3, FIRE + MINUTE, FIRE + 2 * MINUTE, None, "unchanged")
    rejected = run(4, FIRE.astimezone(UTC), FIRE + 3 * MINUTE, "v4", "rejected")
    assert window.served_by([before, rejected, failed, unchanged]) == rejected  # the latest
    assert window.served_by([unchanged]) == unchanged


def test_a_drift_is_served_by_a_run_finished_after_its_detection():
    window = RetrainWindow.drift(FIRE)
    running = run(1, FIRE - 10 * MINUTE, FIRE + MINUTE, "v1", "promoted")
    assert window.served_by([running]) == running
    assert window.served_by([run(2, FIRE - 10 * MINUTE, FIRE - MINUTE, "v2", "promoted")]) is None


def test_the_reason_names_the_window_the_daemon_and_the_version():
    served = run(7, FIRE, FIRE + MINUTE, "20240107T020000Z", "promoted")
    reason = RetrainWindow.scheduled(FIRE).done_by(served)
    assert reason.startswith(f"the retrain scheduled for {FIRE.isoformat()} already ran: ")
    assert "version 20240107T020000Z (promoted), a schedule retrain by regimed-7 on host7" in reason


def test_a_window_and_a_run_cross_the_process_boundary_as_json():
    window = RetrainWindow.drift(FIRE)
    assert RetrainWindow.from_json(window.to_json()) == window
    served = slim_run(run(3, FIRE, FIRE + MINUTE, "v3", "promoted"))
    assert served.report == {"outcome": "promoted", "ran_by": "regimed-3 on host3"}
    assert retrain_run(retrain_run_row(served)) == served
    with pytest.raises(ValueError, match="expected an aware datetime"):
        RetrainWindow.scheduled(dt.datetime(2024, 1, 6, 21))
    with pytest.raises(ValueError, match="expected since and measure"):
        RetrainWindow.from_json({"since": FIRE.isoformat(), "measure": "sometime"})


def test_the_registry_reads_the_runs_finished_since_a_moment(backend_store):
    registry = Registry(backend_store)
    tokyo = ZoneInfo("Asia/Tokyo")
    for i, finished in enumerate(
        [FIRE - MINUTE, FIRE.astimezone(tokyo), (FIRE + MINUTE).astimezone(tokyo), FIRE + MINUTE]
    ):
        registry.add_retrain_run(
            trigger="schedule", started_at=finished - MINUTE, finished_at=finished,
            promoted=False, reason=f"run {i}", version=f"v{i}", report={"outcome": "rejected"},
        )  # fmt: skip
    found = registry.retrain_runs_since(FIRE)
    assert [r.reason for r in found] == ["run 1", "run 2", "run 3"]
    assert registry.retrain_runs_since(FIRE + 2 * MINUTE) == []
    assert RetrainWindow.scheduled(FIRE).served_by(found) == found[-1]
