"""`regimed status`: what is stored, which model serves, when the next retrain runs.

The status document is a contract (`regimed status --json`, docs/operations.md): its keys and
their types are the TypedDicts below, so mypy checks every reader against them.
"""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from daemon.config import Config, ScheduleConfig
from daemon.domain import REGIMES
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store

__all__ = [
    "ChampionStatus",
    "LastRetrain",
    "StatusDocument",
    "next_retrain",
    "no_champion_cause",
    "render",
    "status",
]


class ChampionStatus(TypedDict):
    """The model that scores live rows."""

    version: str
    trained_at: str  # ISO 8601 with UTC offset
    sha256: str


class LastRetrain(TypedDict):
    """The last retrain run, promoted or not; `version` None when it produced no model;
    `reason` the gate's decision in words (or why the run failed)."""

    version: str | None
    trigger: str
    finished_at: str  # ISO 8601 with UTC offset
    promoted: bool
    reason: str


class StatusDocument(TypedDict):
    """`regimed status --json`: `samples` counts per source ("live", "archive") and regime."""

    bars: int
    samples: dict[str, dict[str, int]]
    rejected_events: int
    champion: ChampionStatus | None
    last_retrain: LastRetrain | None
    next_retrain: str  # ISO 8601 with the schedule's UTC offset


def next_retrain(schedule: ScheduleConfig, now: dt.datetime | None = None) -> dt.datetime:
    """The next weekly retrain after `now`, in the schedule's time zone (APScheduler cron)."""
    from daemon.runtime.scheduler import next_fire_time

    return next_fire_time(schedule, now)


def status(config: Config, store: Store, now: dt.datetime | None = None) -> StatusDocument:
    """The status document (`regimed status --json`); keys per docs/operations.md."""
    registry = Registry(store)
    champion = registry.champion()
    run = registry.last_retrain_run()
    return {
        "bars": store.bar_count(),
        "samples": store.sample_counts(),
        "rejected_events": store.counter("rejected_events"),
        "champion": None
        if champion is None
        else {
            "version": champion.version,
            "trained_at": champion.trained_at.isoformat(),
            "sha256": champion.sha256,
        },
        "last_retrain": None
        if run is None
        else {
            "version": run.version,
            "trigger": run.trigger,
            "finished_at": run.finished_at.isoformat(),
            "promoted": run.promoted,
            "reason": run.reason,
        },
        "next_retrain": next_retrain(config.schedule, now).isoformat(),
    }


def no_champion_cause(store: Store) -> str:
    """Why no model serves, for a log line: "; the last retrain (DAY): REASON", or "" when
    no retrain has run or the last one promoted."""
    run = Registry(store).last_retrain_run()
    if run is None or run.promoted or not run.reason:
        return ""
    return f"; the last retrain ({run.finished_at.date()}): {run.reason}"


def render(doc: StatusDocument) -> str:
    """The status as a readable table."""
    lines = [f"bars stored        {doc['bars']:>10,}"]
    lines.append(f"rejected events    {doc['rejected_events']:>10,}")
    lines.append("")
    lines.append(f"  {'samples':<16} {'live':>10} {'archive':>10}")
    for regime in REGIMES:
        live = doc["samples"]["live"].get(regime, 0)
        archive = doc["samples"]["archive"].get(regime, 0)
        lines.append(f"  {regime:<16} {live:>10,} {archive:>10,}")
    live_total = sum(doc["samples"]["live"].values())
    archive_total = sum(doc["samples"]["archive"].values())
    lines.append(f"  {'total':<16} {live_total:>10,} {archive_total:>10,}")
    lines.append("")
    champion = doc["champion"]
    run = doc["last_retrain"]
    lines.append(
        "champion           none yet (live rows are stored but not scored until a retrain "
        "shows skill and promotes one)"
        if champion is None
        else f"champion           {champion['version']} (trained {champion['trained_at']})"
    )
    if champion is None and run is not None and run.get("reason"):
        lines.append(f"  why none          the last retrain: {run['reason']}")
    lines.append(
        "last retrain       none yet"
        if run is None
        else f"last retrain       {run['version'] or 'no model'} ({run['trigger']}, finished "
        f"{run['finished_at']}, {'promoted' if run['promoted'] else 'not promoted'})"
    )
    lines.append(f"next retrain       {doc['next_retrain']}")
    return "\n".join(lines) + "\n"
