"""The weekly schedule on a controlled clock, the start-up catch-up, and the one retrain job on a
real BackgroundScheduler with a stand-in runner (no training here: see test_retrain_runner)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

import pytest

from daemon.config import ScheduleConfig
from daemon.runtime.retrain_runner import RunResult
from daemon.runtime.scheduler import (
    JOB_ID,
    JobEvent,
    RetrainScheduler,
    cron_trigger,
    missed_fire,
    next_fire_time,
    previous_fire_time,
)
from daemon.runtime.status import next_retrain
from daemon.training.window import RetrainWindow

NY = ZoneInfo("America/New_York")
WAIT_S = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.01)


# -- the calendar --------------------------------------------------------------------------------


def fires_between(schedule: ScheduleConfig, start: dt.datetime, end: dt.datetime) -> list:
    trigger = cron_trigger(schedule)
    out = []
    fire = trigger.get_next_fire_time(None, start)
    while fire <= end:
        out.append(fire)
        fire = trigger.get_next_fire_time(fire, fire)
    return out


def test_one_run_every_saturday_at_2100_new_york_across_three_years_of_dst_changes():
    start = dt.datetime(2025, 1, 1, tzinfo=NY)
    end = dt.datetime(2027, 12, 31, 23, 59, tzinfo=NY)
    fires = fires_between(ScheduleConfig(), start, end)

    days = (start.date() + dt.timedelta(days=i) for i in range((end.date() - start.date()).days))
    saturdays = [d for d in days if d.weekday() == 5]
    assert len(saturdays) == 156
    assert [f.date() for f in fires] == saturdays  # exactly one per Saturday
    assert {(f.hour, f.minute, f.second, f.microsecond) for f in fires} == {(21, 0, 0, 0)}
    assert {f.tzinfo for f in fires} == {NY}

    # The UTC offset follows daylight saving time: EST -5 h in winter, EDT -4 h in summer,
    # switching exactly at the six changes of 2025-2027 (second Sunday of March, first of
    # November), so in UTC the weekly gap is 7 days -1 h or +1 h there.
    assert {f.utcoffset() for f in fires} == {dt.timedelta(hours=-5), dt.timedelta(hours=-4)}
    changes = [(a, b) for a, b in itertools.pairwise(fires) if a.utcoffset() != b.utcoffset()]
    dst_days = [
        dt.date(2025, 3, 9),
        dt.date(2025, 11, 2),
        dt.date(2026, 3, 8),
        dt.date(2026, 11, 1),
        dt.date(2027, 3, 14),
        dt.date(2027, 11, 7),
    ]
    assert [b.date() - dt.timedelta(days=6) for a, b in changes] == dst_days
    for a, b in changes:
        spring = b.utcoffset() == dt.timedelta(hours=-4)
        gap = dt.timedelta(days=7, hours=-1 if spring else 1)
        assert b.astimezone(dt.UTC) - a.astimezone(dt.UTC) == gap
    for a, b in itertools.pairwise(fires):
        if (a, b) not in changes:
            assert b.astimezone(dt.UTC) - a.astimezone(dt.UTC) == dt.timedelta(days=7)


def test_next_and_previous_fire_times_agree_with_the_cron_trigger():
    schedule = ScheduleConfig()
    fires = fires_between(
        schedule, dt.datetime(2025, 1, 1, tzinfo=NY), dt.datetime(2027, 12, 31, tzinfo=NY)
    )
    for fire in fires:
        assert next_fire_time(schedule, fire - dt.timedelta(seconds=1)) == fire
        assert previous_fire_time(schedule, fire) == fire
        assert previous_fire_time(schedule, fire + dt.timedelta(days=6, hours=23)) == fire
    assert next_retrain(schedule, fires[0] - dt.timedelta(hours=1)) == fires[0]  # status delegates


def test_a_custom_schedule_keeps_its_fields_and_zone():
    schedule = ScheduleConfig(day_of_week="mon-fri", hour=6, minute=30, timezone="Europe/Berlin")
    now = dt.datetime(2026, 3, 27, 12, tzinfo=dt.UTC)  # a Friday; Berlin moves to CEST on Sunday
    assert next_fire_time(schedule, now).isoformat() == "2026-03-30T06:30:00+02:00"
    assert previous_fire_time(schedule, now).isoformat() == "2026-03-27T06:30:00+01:00"


def test_times_without_a_zone_are_refused_by_name():
    with pytest.raises(ValueError, match="now = 2026-01-01T00:00:00: expected an aware"):
        previous_fire_time(ScheduleConfig(), dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match=r"last_success = .*expected an aware"):
        missed_fire(ScheduleConfig(), dt.datetime(2026, 1, 1), dt.datetime.now(dt.UTC))


# -- the catch-up decision -----------------------------------------------------------------------

SATURDAY = dt.datetime(2026, 3, 7, 21, 0, tzinfo=NY)  # the evening before a DST change
SUNDAY_NOON = dt.datetime(2026, 3, 8, 12, 0, tzinfo=NY)


@pytest.mark.parametrize(
    ("last_success", "expected"),
    [
        (SATURDAY - dt.timedelta(days=7) + dt.timedelta(seconds=3), SATURDAY),  # a week old
        (SATURDAY - dt.timedelta(days=30), SATURDAY),  # down over four Saturdays: still one
        (SATURDAY - dt.timedelta(seconds=1), SATURDAY),  # a manual run just before
        (SATURDAY, None),  # the scheduled run itself
        (SATURDAY + dt.timedelta(seconds=2), None),
        (SUNDAY_NOON - dt.timedelta(hours=1), None),  # a manual run since
        (None, None),  # nothing trained yet: a new installation, not a missed run
    ],
)
def test_the_previous_saturday_is_missed_only_when_no_retrain_succeeded_since(
    last_success, expected
):
    assert missed_fire(ScheduleConfig(), last_success, SUNDAY_NOON) == expected


def test_last_success_in_another_zone_compares_as_an_instant():
    just_after = (SATURDAY + dt.timedelta(minutes=1)).astimezone(dt.UTC)
    assert missed_fire(ScheduleConfig(), just_after, SUNDAY_NOON) is None


# -- the job on a real BackgroundScheduler --------------------------------------------------------


class StandInRunner:
    """Records its calls; with `block`, a run waits for `release` (or for stop)."""

    def __init__(self, *, block: bool = False, fail: bool = False) -> None:
        self.block = block
        self.fail = fail
        self.calls: list[str] = []
        self.windows: list[RetrainWindow | None] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.stopped = threading.Event()

    def run(self, trigger: str, window: RetrainWindow | None = None) -> RunResult:
        self.calls.append(trigger)
        self.windows.append(window)
        self.started.set()
        if self.fail:
            raise RuntimeError("a bug in the runner")
        if self.block:
            assert self.release.wait(WAIT_S), "the test never released the run"
        outcome = "stopped" if self.stopped.is_set() else "rejected"
        return RunResult(trigger, outcome, 0.01, report={"version": "v1"}, reason="test")

    def stop(self) -> None:
        self.stopped.set()
        self.release.set()


class Recorder:
    def __init__(self) -> None:
        self.results: list[RunResult] = []
        self.events: list[JobEvent] = []


@pytest.fixture
def make_scheduler() -> Iterator[Callable[..., tuple[RetrainScheduler, StandInRunner, Recorder]]]:
    """A started RetrainScheduler with observers; shut down (threads joined) after the test."""
    made: list[RetrainScheduler] = []

    def make(schedule: ScheduleConfig | None = None, **runner_options: bool):
        runner = StandInRunner(**runner_options)
        scheduler = RetrainScheduler(schedule or ScheduleConfig(), runner)
        recorder = Recorder()
        scheduler.on_result(recorder.results.append)
        scheduler.on_event(recorder.events.append)
        scheduler.start()
        made.append(scheduler)
        return scheduler, runner, recorder

    before = set(threading.enumerate())
    yield make
    for scheduler in made:
        assert scheduler.shutdown(wait=True, timeout=WAIT_S)
    assert set(threading.enumerate()) <= before, "a scheduler thread was left running"


def test_the_cron_job_is_next_due_on_saturday_2100_new_york(make_scheduler):
    scheduler, _, _ = make_scheduler()
    job = scheduler.scheduler.get_job(JOB_ID)
    assert job.max_instances == 1
    assert job.coalesce is True
    assert job.misfire_grace_time == ScheduleConfig().misfire_grace_seconds
    when = scheduler.next_run_time()
    assert when == next_fire_time(ScheduleConfig())
    assert (when.weekday(), when.hour, when.minute, when.tzinfo) == (5, 21, 0, NY)


def test_a_trigger_runs_the_job_once_and_observers_see_the_result(make_scheduler):
    scheduler, runner, recorder = make_scheduler()
    assert scheduler.trigger("drift") is True
    wait_for(lambda: recorder.results)
    assert runner.calls == ["drift"]
    assert recorder.results[0].trigger == "drift"
    assert scheduler.runs == 1
    assert scheduler.outcomes == {("drift", "rejected"): 1}
    wait_for(lambda: scheduler.executed == 1)
    assert scheduler.running is None
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())  # back on the calendar
    assert (scheduler.skipped, scheduler.missed, scheduler.errors) == (0, 0, 0)


def test_max_instances_one_skips_and_counts_triggers_during_a_run(make_scheduler):
    scheduler, runner, recorder = make_scheduler(block=True)
    assert scheduler.trigger("drift") is True
    assert runner.started.wait(WAIT_S)
    assert scheduler.running == "drift"

    # A drift trigger while the retrain runs is counted and skipped ...
    assert scheduler.trigger("drift") is False
    assert scheduler.skipped == 1
    # ... and so is the Saturday time coming due now: APScheduler refuses a second instance.
    scheduler.scheduler.modify_job(JOB_ID, next_run_time=dt.datetime.now(NY))
    wait_for(lambda: scheduler.skipped == 2)
    assert [(e.kind, e.trigger) for e in recorder.events] == [
        ("skipped", "drift"),
        ("skipped", "schedule"),
    ]
    assert recorder.events[1].scheduled_at is not None

    runner.release.set()
    wait_for(lambda: recorder.results)
    assert runner.calls == ["drift"]  # one run, never two at a time
    assert scheduler.runs == 1
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())
    assert scheduler.trigger("manual") is True  # idle again: a trigger runs
    wait_for(lambda: len(recorder.results) == 2)
    assert runner.calls == ["drift", "manual"]


def test_a_scheduled_time_past_the_misfire_grace_is_counted_as_missed_not_run(make_scheduler):
    scheduler, runner, recorder = make_scheduler(ScheduleConfig(misfire_grace_seconds=1))
    late = dt.datetime.now(NY) - dt.timedelta(seconds=30)  # e.g. the host was suspended
    scheduler.scheduler.modify_job(JOB_ID, next_run_time=late)
    wait_for(lambda: scheduler.missed == 1)
    assert runner.calls == []
    assert [(e.kind, e.trigger, e.scheduled_at) for e in recorder.events] == [
        ("missed", "schedule", late)
    ]
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())


def test_a_job_that_raises_is_counted_as_an_error_and_the_job_stays_usable(make_scheduler):
    scheduler, runner, recorder = make_scheduler(fail=True)
    assert scheduler.trigger("manual") is True
    wait_for(lambda: scheduler.errors == 1)
    assert recorder.events[0].kind == "error"
    assert recorder.events[0].trigger == "manual"
    assert "a bug in the runner" in recorder.events[0].detail
    assert recorder.results == []
    wait_for(lambda: scheduler.running is None)
    runner.fail = False
    assert scheduler.trigger("manual") is True
    wait_for(lambda: recorder.results)


def test_exactly_one_catch_up_after_downtime_spanning_a_saturday(make_scheduler):
    scheduler, runner, recorder = make_scheduler()
    down_since = SATURDAY - dt.timedelta(days=7) + dt.timedelta(seconds=40)  # last Saturday's run
    assert scheduler.catch_up(down_since, now=SUNDAY_NOON) is True
    wait_for(lambda: recorder.results)
    assert runner.calls == ["schedule"]
    assert [(e.kind, e.scheduled_at) for e in recorder.events] == [("catch_up", SATURDAY)]
    # Never twice, whatever the registry says on a second call.
    assert scheduler.catch_up(down_since, now=SUNDAY_NOON) is False
    assert scheduler.catch_up(None, now=SUNDAY_NOON + dt.timedelta(days=30)) is False
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())
    assert runner.calls == ["schedule"]


def test_no_catch_up_when_a_retrain_succeeded_after_the_previous_saturday(make_scheduler):
    scheduler, runner, recorder = make_scheduler()
    assert scheduler.catch_up(SATURDAY + dt.timedelta(seconds=1), now=SUNDAY_NOON) is False
    # Nothing was requested: the job's next run is still the coming Saturday.
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())
    assert runner.calls == []
    assert recorder.events == []


def test_shutdown_stops_a_running_retrain_and_joins_every_thread(make_scheduler):
    scheduler, runner, recorder = make_scheduler(block=True)
    assert scheduler.trigger("schedule") is True
    assert runner.started.wait(WAIT_S)
    t0 = time.monotonic()
    assert scheduler.shutdown(wait=True, timeout=WAIT_S) is True
    assert time.monotonic() - t0 < WAIT_S
    assert runner.stopped.is_set()
    assert [r.outcome for r in recorder.results] == ["stopped"]
    assert scheduler.trigger("drift") is False  # stopping: nothing new starts


def test_trigger_needs_a_started_scheduler_and_a_name():
    scheduler = RetrainScheduler(ScheduleConfig(), StandInRunner())
    with pytest.raises(RuntimeError, match=r"not running: call start\(\) first"):
        scheduler.trigger("drift")
    assert scheduler.next_run_time() == next_fire_time(ScheduleConfig())
    assert scheduler.shutdown() is True  # never started: nothing to join
    with pytest.raises(ValueError, match="trigger = ''"):
        scheduler.trigger("")


def test_a_request_the_executor_never_took_up_does_not_block_later_triggers(
    make_scheduler, monkeypatch
):
    scheduler, runner, recorder = make_scheduler()
    monkeypatch.setattr("daemon.runtime.scheduler._REQUEST_LOST_S", 0.05)
    real_modify = scheduler.scheduler.modify_job
    monkeypatch.setattr(scheduler.scheduler, "modify_job", lambda *a, **k: None)  # lost
    assert scheduler.trigger("drift") is True
    assert scheduler.trigger("drift") is False  # still pending: skipped
    time.sleep(0.1)
    monkeypatch.setattr(scheduler.scheduler, "modify_job", real_modify)
    assert scheduler.trigger("manual") is True  # the lost request is replaced
    wait_for(lambda: recorder.results)
    assert runner.calls == ["manual"]


def test_each_run_names_the_window_it_serves(make_scheduler):
    """The cron's firing serves its scheduled time, a catch-up the missed one, a drift the
    time of its detection; a manual trigger serves none (the trainer then always trains)."""
    scheduler, runner, recorder = make_scheduler()
    before = previous_fire_time(ScheduleConfig(), dt.datetime.now(NY))
    scheduler.scheduler.modify_job(JOB_ID, next_run_time=dt.datetime.now(NY))  # the cron fires
    wait_for(lambda: len(recorder.results) == 1)
    after = previous_fire_time(ScheduleConfig(), dt.datetime.now(NY))
    assert runner.windows[0] in {RetrainWindow.scheduled(before), RetrainWindow.scheduled(after)}
    wait_for(lambda: scheduler.running is None)

    detected = RetrainWindow.drift(dt.datetime.now(dt.UTC))
    assert scheduler.trigger("drift", detected) is True
    wait_for(lambda: len(recorder.results) == 2)
    wait_for(lambda: scheduler.running is None)
    assert scheduler.trigger("manual") is True
    wait_for(lambda: len(recorder.results) == 3)
    wait_for(lambda: scheduler.running is None)
    down_since = SATURDAY - dt.timedelta(days=7)
    assert scheduler.catch_up(down_since, now=SUNDAY_NOON) is True
    wait_for(lambda: len(recorder.results) == 4)
    assert runner.calls == ["schedule", "drift", "manual", "schedule"]
    assert runner.windows[1:] == [detected, None, RetrainWindow.scheduled(SATURDAY)]
