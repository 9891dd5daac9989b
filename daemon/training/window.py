"""The window a retrain of the daemon serves, so that the daemons of one group retrain once per
window and not once each.

Daemons that share a PostgreSQL store run their scheduled, drift and catch-up retrains under
one advisory lock (daemon.training.lock), but the lock only keeps two of them from training at
the same time: a daemon whose clock or start is a little later would take the lock once the
first released it and train again. So a retrain of the daemon names the window it serves, and
the trainer, once it holds the lock, looks in the shared retrain history whether a run of any
daemon (or a `regimed retrain`) served that window already; then it trains nothing, and the
daemon serves the champion that run left, as it serves any new champion.

- a scheduled firing, or the catch-up of a missed one, is served by a run that *started* at
  or after its scheduled time (the rule `daemon.runtime.scheduler.missed_fire` applies to a
  missed firing);
- a drift is served by a run that *finished* after the drift was detected.

Only a run that made a candidate (promoted or rejected) or found it unchanged serves a window,
as only such a run counts as a success for the catch-up: after a failed run the next daemon
that takes the lock tries again. A retrain from the command line serves no window of its own
(`regimed retrain` always trains).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from daemon.config import Config
from daemon.registry.records import RetrainRun

__all__ = ["RetrainWindow", "ran_by", "slim_run"]

Measure = Literal["started", "finished"]


@dataclasses.dataclass(frozen=True)
class RetrainWindow:
    """What one retrain serves: runs `measure`d (started or finished) at or after `since`."""

    since: dt.datetime
    measure: Measure

    def __post_init__(self) -> None:
        if self.since.utcoffset() is None:
            raise ValueError(f"since = {self.since.isoformat()}: expected an aware datetime")
        if self.measure not in ("started", "finished"):
            raise ValueError(f"measure = {self.measure!r}: expected 'started' or 'finished'")

    @classmethod
    def scheduled(cls, fire_time: dt.datetime) -> RetrainWindow:
        """The window of the scheduled firing at `fire_time` (or of its catch-up)."""
        return cls(fire_time, "started")

    @classmethod
    def drift(cls, detected_at: dt.datetime) -> RetrainWindow:
        """The window of a drift detected at `detected_at`."""
        return cls(detected_at, "finished")

    def served_by(self, runs: Iterable[RetrainRun]) -> RetrainRun | None:
        """The latest of `runs` that served this window, or None."""
        served = [run for run in runs if _succeeded(run) and self._inside(run)]
        return max(served, key=lambda run: run.id, default=None)

    def describe(self) -> str:
        """The window in words, for the log."""
        if self.measure == "started":
            return f"the retrain scheduled for {self.since.isoformat()}"
        return f"the retrain for the drift detected at {self.since.isoformat()}"

    def done_by(self, run: RetrainRun) -> str:
        """Why a retrain of this window is not run: `run` served it (who, which version)."""
        outcome = run.report.get("outcome") or ("promoted" if run.promoted else "rejected")
        made = f"version {run.version} ({outcome})" if run.version else str(outcome)
        who = run.report.get("ran_by") or "an unnamed daemon"
        return (
            f"{self.describe()} already ran: {made}, a {run.trigger} retrain by {who} that "
            f"finished {run.finished_at.isoformat()}; its champion serves here too"
        )

    def to_json(self) -> dict[str, str]:
        """The window as JSON values (the retrain process gets it through a pipe)."""
        return {"since": self.since.isoformat(), "measure": self.measure}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RetrainWindow:
        """The window `to_json` wrote; ValueError naming the bad value otherwise."""
        since, measure = doc.get("since"), doc.get("measure")
        if not isinstance(since, str) or measure not in ("started", "finished"):
            raise ValueError(f"retrain window {dict(doc)!r}: expected since and measure")
        return cls(dt.datetime.fromisoformat(since), measure)

    def _inside(self, run: RetrainRun) -> bool:
        moment = run.started_at if self.measure == "started" else run.finished_at
        return moment >= self.since


def _succeeded(run: RetrainRun) -> bool:
    """A run that registered a candidate, or found it unchanged (it registers none)."""
    return run.version is not None or run.report.get("outcome") == "unchanged"


def slim_run(run: RetrainRun) -> RetrainRun:
    """`run` with only the parts of its report that say what it did and who ran it."""
    keep: dict[str, Any] = {k: run.report[k] for k in ("outcome", "ran_by") if k in run.report}
    return dataclasses.replace(run, report=keep)


def ran_by(config: Config) -> str:
    """Who runs a retrain, as its report records it (`ran_by`): the daemon's static group
    member id (`kafka.group_instance_id`, by default regimed-<host>) and the host."""
    return f"{config.kafka.effective_group_instance_id} on {socket.gethostname()}"
