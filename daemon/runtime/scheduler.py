"""The weekly retrain schedule, and the one job every retrain of the daemon goes through.

An APScheduler 3 `BackgroundScheduler` holds one cron job, id `retrain`: `schedule.day_of_week`
at `schedule.hour`:`schedule.minute` in `schedule.timezone` (default Saturday 21:00
America/New_York), with `misfire_grace_time`, `coalesce` and `max_instances = 1` in its
`job_defaults`. Drift triggers, the start-up catch-up and any other one-off retrain run the
*same* job (its next run time is moved to now), so `max_instances = 1` guards them all: a
trigger while a retrain runs is counted as skipped and not run.

The job only supervises: the retrain itself runs in a child process
(`daemon.runtime.retrain_runner`). Observers registered with `on_result` see every `RunResult`,
those registered with `on_event` every missed, skipped or failed job and every catch-up; the
counters (`runs`, `skipped`, `missed`, `errors`, `executed`) are plain integers for tests and
metrics.

The scheduler keeps its jobs in memory, so it cannot know about runs missed while the daemon was
down; `catch_up` decides that from the registry once at start-up: when the last retrain that
produced a candidate started before the previous scheduled time, one retrain runs now, however
many scheduled times were missed.

Each run names the window it serves (daemon.training.window): a scheduled firing and a catch-up
the scheduled time, a drift the time it was detected (given to `trigger`). The retrain process
looks that window up in the store's retrain history once it holds the lock, so daemons sharing
a store run it once for the group; other triggers (manual, demo) name none and always train.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import threading
import time
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon.config import ScheduleConfig
from daemon.registry.versions import Registry
from daemon.runtime.retrain_runner import RunResult
from daemon.training.window import RetrainWindow

if TYPE_CHECKING:
    from daemon.store.sqlite import Store

__all__ = [
    "JOB_ID",
    "SCHEDULE",
    "ChampionWatch",
    "JobEvent",
    "RetrainScheduler",
    "Runner",
    "champion_version",
    "cron_trigger",
    "last_success",
    "missed_fire",
    "next_fire_time",
    "previous_fire_time",
]

logger = logging.getLogger(__name__)

#: The id of the one job every retrain runs through.
JOB_ID = "retrain"
#: The trigger name of scheduled runs (and of the catch-up of a missed one).
SCHEDULE = "schedule"

#: A requested run that has not started after this long was lost (APScheduler could not
#: submit it, e.g. no thread could be started); a new trigger replaces it.
_REQUEST_LOST_S = 60.0

EventKind = Literal["missed", "skipped", "error", "catch_up"]


class Runner(Protocol):
    """What the job calls: `daemon.runtime.retrain_runner.RetrainRunner` (tests pass stand-ins)."""

    def run(self, trigger: str, window: RetrainWindow | None = None) -> RunResult:
        """Run one retrain (serving `window`, if any) and say what became of it; never raises
        for a failed retrain."""
        ...

    def stop(self) -> None:
        """Stop a running retrain and refuse new ones; returns at once."""
        ...


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """Something about the retrain job other than a finished run.

    missed: a scheduled time passed more than `misfire_grace_seconds` before the job could
    start (the process was suspended or stalled), so it did not run. skipped: a trigger came
    while a retrain was running (or already requested). error: the job raised (a bug; the
    traceback is logged). catch_up: a run missed while the daemon was down runs now.
    """

    kind: EventKind
    trigger: str
    scheduled_at: dt.datetime | None = None
    detail: str = ""


# -- the calendar ------------------------------------------------------------------------------


def cron_trigger(schedule: ScheduleConfig) -> CronTrigger:
    """The weekly cron trigger of `schedule`, in its time zone as an explicit ZoneInfo."""
    return CronTrigger(
        day_of_week=schedule.day_of_week,
        hour=schedule.hour,
        minute=schedule.minute,
        timezone=zoneinfo.ZoneInfo(schedule.timezone),
    )


def next_fire_time(schedule: ScheduleConfig, now: dt.datetime | None = None) -> dt.datetime:
    """The first scheduled time after `now` (aware; default: the current time), in the
    schedule's time zone."""
    now = _aware(now or dt.datetime.now(dt.UTC), "now")
    fire: dt.datetime = cron_trigger(schedule).get_next_fire_time(None, now)
    return fire


def previous_fire_time(schedule: ScheduleConfig, now: dt.datetime) -> dt.datetime:
    """The last scheduled time at or before `now` (aware), in the schedule's time zone."""
    now = _aware(now, "now")
    trigger = cron_trigger(schedule)
    # Every schedule fires at least once a week (day_of_week is never empty); 8 days back
    # leaves room for a DST change.
    fire: dt.datetime | None = trigger.get_next_fire_time(None, now - dt.timedelta(days=8))
    previous: dt.datetime | None = None
    while fire is not None and fire <= now:
        previous = fire
        fire = trigger.get_next_fire_time(fire, fire)
    assert previous is not None, now  # a week back always holds a scheduled time
    return previous


def missed_fire(
    schedule: ScheduleConfig, last_success: dt.datetime | None, now: dt.datetime
) -> dt.datetime | None:
    """The scheduled time that no retrain served, if the latest one was missed.

    `last_success` is when the latest retrain that produced a candidate (promoted or not, any
    trigger) started; None when there never was one, which is a new installation rather than
    a missed run, so nothing is caught up (the first retrain would fail without data).
    """
    if last_success is None:
        return None
    previous = previous_fire_time(schedule, now)
    return previous if _aware(last_success, "last_success") < previous else None


def _aware(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} = {moment.isoformat()}: expected an aware datetime")
    return moment


# -- the registry ------------------------------------------------------------------------------


def last_success(store: Store) -> dt.datetime | None:
    """When the latest retrain that registered a candidate (promoted or not) started, or the
    latest one that found its candidate unchanged (it registers nothing)."""
    registry = Registry(store)
    found = [m.trained_at for m in registry.models()]
    run = registry.last_retrain_run()
    if run is not None and run.report.get("outcome") == "unchanged":
        found.append(run.started_at)
    return max(found, default=None)


def champion_version(store: Store) -> str | None:
    """The version of the current champion in `store`'s registry, or None."""
    record = Registry(store).champion()
    return None if record is None else record.version


class ChampionWatch:
    """Notices a change of champion made by another process (`regimed retrain` or
    `regimed models promote` from the command line), so the daemon can reload its scorer.

    Call `poll` after every retrain result and periodically (it is one indexed read).
    """

    def __init__(self, version: str | None) -> None:
        self.version = version

    def poll(self, store: Store) -> bool:
        """True once per change: the champion differs from the version seen last."""
        current = champion_version(store)
        if current == self.version:
            return False
        logger.info("champion changed: %s -> %s", self.version, current)
        self.version = current
        return True


# -- the scheduler -----------------------------------------------------------------------------


class RetrainScheduler:
    """The weekly retrain and every other retrain of the daemon, one at a time."""

    def __init__(self, schedule: ScheduleConfig, runner: Runner) -> None:
        self.schedule = schedule
        self.runner = runner
        self.timezone = zoneinfo.ZoneInfo(schedule.timezone)
        #: Finished runs (every RunResult), by (trigger, outcome) in `outcomes`.
        self.runs = 0
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        #: Triggers refused because a retrain was running or already requested, plus
        #: scheduled times that came while one was running (EVENT_JOB_MAX_INSTANCES).
        self.skipped = 0
        #: Scheduled times that passed more than the misfire grace before the job could run.
        self.missed = 0
        #: Job calls that raised (EVENT_JOB_ERROR), and that returned (EVENT_JOB_EXECUTED).
        self.errors = 0
        self.executed = 0
        self._result_observers: list[Callable[[RunResult], None]] = []
        self._event_observers: list[Callable[[JobEvent], None]] = []
        self._lock = threading.Lock()
        self._requested: str | None = None
        self._requested_window: RetrainWindow | None = None
        self._requested_at = 0.0
        self._running: str | None = None
        self._last_trigger: str | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._started = False
        self._stopping = False
        self._caught_up = False
        self.scheduler: Any = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "misfire_grace_time": schedule.misfire_grace_seconds,
                "coalesce": True,
                "max_instances": 1,
            },
            timezone=self.timezone,
        )
        self.scheduler.add_listener(
            self._on_job_event,
            EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_EXECUTED,
        )
        self.scheduler.add_job(
            self._job, cron_trigger(schedule), id=JOB_ID, name="retrain", replace_existing=True
        )

    # -- observers -----------------------------------------------------------------------------

    def on_result(self, callback: Callable[[RunResult], None]) -> None:
        """Call `callback(result)` after every run, on the scheduler's worker thread."""
        self._result_observers.append(callback)

    def on_event(self, callback: Callable[[JobEvent], None]) -> None:
        """Call `callback(event)` for every missed, skipped or failed job and catch-up."""
        self._event_observers.append(callback)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread; the cron job's first run is the next scheduled time."""
        self.scheduler.start()
        with self._lock:
            self._started = True
        logger.info(
            "weekly retrain: %s %02d:%02d %s; next %s",
            self.schedule.day_of_week,
            self.schedule.hour,
            self.schedule.minute,
            self.schedule.timezone,
            self.next_run_time(),
        )

    def shutdown(self, wait: bool = True, timeout: float = 25.0) -> bool:
        """Stop scheduling, stop a running retrain (through the runner) and, with `wait`,
        join the scheduler's threads once the job has returned, for at most `timeout` seconds.

        True when everything stopped in time; False when the job was still running at the
        deadline (the threads are then left to end on their own, and an error is logged).
        """
        with self._lock:
            self._stopping = True
            started, self._started = self._started, False
        self.runner.stop()
        if not started:
            return True  # never started, or already shut down
        idle = self._idle.wait(timeout) if wait else self._idle.is_set()
        if wait and not idle:
            logger.error("the retrain job did not return within %.0f s of the stop", timeout)
        self.scheduler.shutdown(wait=wait and idle)
        return idle

    # -- running -------------------------------------------------------------------------------

    @property
    def running(self) -> str | None:
        """The trigger of the retrain in progress, or None."""
        with self._lock:
            return self._running

    def next_run_time(self) -> dt.datetime | None:
        """When the job runs next (a requested run counts), in the schedule's time zone."""
        with self._lock:
            started = self._started
        if not started:
            return next_fire_time(self.schedule)
        job = self.scheduler.get_job(JOB_ID)
        when: dt.datetime | None = None if job is None else job.next_run_time
        return when

    def trigger(self, trigger: str, window: RetrainWindow | None = None) -> bool:
        """Run the retrain job now for `trigger` (drift, manual, ...), serving `window` when
        one is given; False, counted as skipped, when a retrain is running or already
        requested; False when stopping."""
        if not trigger:
            raise ValueError("trigger = '': expected a name such as drift or manual")
        with self._lock:
            if self._stopping:
                logger.info("retrain (%s) not started: the daemon is stopping", trigger)
                return False
            if not self._started:
                raise RuntimeError("the retrain scheduler is not running: call start() first")
            if self._running is None and self._requested is not None:
                waited = time.monotonic() - self._requested_at
                if waited > _REQUEST_LOST_S:  # the executor never took it up: ask again
                    lost = self._requested
                    logger.warning("retrain (%s) requested %.0f s ago never ran", lost, waited)
                    self._requested = None
            busy = self._running or self._requested
            if busy is None:
                self._requested, self._requested_at = trigger, time.monotonic()
                self._requested_window = window
            else:
                self.skipped += 1
        if busy is not None:
            logger.info("retrain (%s) skipped: a retrain (%s) is already running", trigger, busy)
            self._notify_event(JobEvent("skipped", trigger, detail=f"{busy} retrain running"))
            return False
        try:
            self.scheduler.modify_job(JOB_ID, next_run_time=dt.datetime.now(self.timezone))
        except BaseException:
            with self._lock:
                self._requested = None
            raise
        return True

    def catch_up(self, last_success: dt.datetime | None, now: dt.datetime | None = None) -> bool:
        """Once per scheduler, after `start`: run the retrain now if the previous scheduled
        time was missed (see `missed_fire`); True when a catch-up run was started."""
        with self._lock:
            if self._caught_up:
                return False
            self._caught_up = True
        missed = missed_fire(self.schedule, last_success, now or dt.datetime.now(dt.UTC))
        if missed is None:
            return False
        logger.warning(
            "the retrain scheduled for %s did not run (last successful retrain started %s): "
            "running it now",
            missed.isoformat(),
            last_success.isoformat() if last_success else "never",
        )
        started = self.trigger(SCHEDULE, RetrainWindow.scheduled(missed))
        if started:
            self._notify_event(JobEvent("catch_up", SCHEDULE, scheduled_at=missed))
        return started

    def _job(self) -> None:
        with self._lock:
            trigger = self._requested or SCHEDULE
            window = self._requested_window
            if self._requested is None:  # the cron's firing: the latest scheduled time
                now = dt.datetime.now(self.timezone)
                window = RetrainWindow.scheduled(previous_fire_time(self.schedule, now))
            self._requested, self._requested_window = None, None
            self._running = self._last_trigger = trigger
            self._idle.clear()
        result = self.runner.run(trigger, window)
        with self._lock:
            self.runs += 1
            self.outcomes[(result.trigger, result.outcome)] += 1
        for observer in list(self._result_observers):
            try:
                observer(result)
            except Exception:
                logger.exception("a retrain result observer failed")
        # The job counts as running until APScheduler's executor has released its instance
        # (`_on_job_event`); a trigger in between would be refused by max_instances anyway.

    def _on_job_event(self, event: Any) -> None:
        if event.job_id != JOB_ID:
            return
        # Execution events carry one scheduled time, submission events (max instances) a list.
        scheduled: dt.datetime | None = getattr(event, "scheduled_run_time", None)
        if scheduled is None and getattr(event, "scheduled_run_times", None):
            scheduled = event.scheduled_run_times[-1]
        job_event: JobEvent | None = None
        with self._lock:
            if event.code in (EVENT_JOB_EXECUTED, EVENT_JOB_ERROR, EVENT_JOB_MISSED):
                # Dispatched after the executor released the job's instance: idle again.
                trigger = self._last_trigger or SCHEDULE
                self._running = None
                self._idle.set()
            if event.code == EVENT_JOB_EXECUTED:
                self.executed += 1
            elif event.code == EVENT_JOB_MISSED:
                self.missed += 1
                # The run did not happen: a run requested for it must not block later triggers.
                trigger, self._requested = self._requested or SCHEDULE, None
                job_event = JobEvent("missed", trigger, scheduled, "past the misfire grace")
            elif event.code == EVENT_JOB_MAX_INSTANCES:
                self.skipped += 1
                job_event = JobEvent("skipped", SCHEDULE, scheduled, "a retrain was running")
            else:  # EVENT_JOB_ERROR; APScheduler has logged the traceback
                self.errors += 1
                job_event = JobEvent("error", trigger, scheduled, repr(event.exception))
        if job_event is not None:
            self._notify_event(job_event)

    def _notify_event(self, event: JobEvent) -> None:
        for observer in list(self._event_observers):
            try:
                observer(event)
            except Exception:
                logger.exception("a retrain job event observer failed")
