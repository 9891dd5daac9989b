"""Run one retrain in a child process, so training never holds the daemon's GIL: the parent's
side, which starts, feeds, watches and stops the child (`daemon.runtime.retrain_child`).

The daemon's consumer must call `poll()` well within `kafka.max_poll_interval_ms`; a retrain
fits models for minutes in native code and Python alike, so it runs in a process of its own:
`python -P -m daemon.runtime.retrain_child`. The parent hands the child the
request on standard input: the trigger and the daemon's *effective* configuration as plain JSON
values (secrets included), which the child builds into a `Config` again with the same code
that loads `config.toml`. So the child trains with exactly the configuration the daemon runs
with, whether it came from a file, `REGIMED_` variables or code (the demo), even when the file
was edited since start-up; no secret is written to disk, to argv or to the environment
(`Config.to_toml()` masks secrets, so a rendered file would not do).

The child prints the report (the `regimed retrain --json` document) on its standard output and
exits 0; 1 when no candidate could be made (the failed run's report still printed); 75
(EX_TEMPFAIL) when another retrain holds the store's lock; 3 when a run of the group served the
request's window already (it prints that run instead of a report; daemon.training.window); 143
when terminated. Anything a library prints goes to standard error, never into the report. The
child logs at the daemon's level to standard error (a temporary file), and the parent forwards
each record to its own loggers while it waits, so the trainer's warnings reach the daemon's
journal as they happen.

Stopping: the parent checks its stop event while it waits, sends SIGTERM to the child's process
group, and SIGKILL after `stop_grace_seconds`. The child turns SIGTERM into an exception, so the
trainer's context managers run: the lock is released, the store's transaction rolled back and a
half-written artifact directory removed (`save_bundle` removes it on any exception). After a
SIGKILL the kernel still releases the lock; a `models/.tmp-*` directory may then remain.

The child also stops when the daemon dies, however it dies: it keeps its standard input open and
a thread reads it to the end; end of file means the parent is gone, so the child terminates
itself the same way. (A pipe rather than `prctl(PR_SET_PDEATHSIG)`: that needs a `preexec_fn`,
which is unsafe in a process with threads, and fires when the forking *thread* exits.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from daemon.config import Config
from daemon.config.runtime import RetrainProcessConfig
from daemon.registry.records import RetrainRun, retrain_run
from daemon.runtime.retrain_child import (
    ALREADY_RUN,
    EXIT_ALREADY_RUN,
    EXIT_BUSY,
    EXIT_OK,
    EXIT_TERMINATED,
    config_document,
    config_from_document,
)
from daemon.training.report import RetrainReport
from daemon.training.threads import DAEMON_CORES, resolve_n_jobs, thread_environment
from daemon.training.window import RetrainWindow

__all__ = [
    "EXIT_BUSY",
    "EXIT_TERMINATED",
    "OUTCOMES",
    "Outcome",
    "RetrainRunner",
    "RunResult",
    "config_document",
    "config_from_document",
]

logger = logging.getLogger(__name__)

#: What became of a run: a candidate promoted or rejected by the gate, a candidate predicting as
#: the champion does (unchanged: no version added), no candidate (failed), not run because
#: another retrain holds the lock (busy), not run because a run of the group served its window
#: already (already_run, daemon.training.window), or stopped by the daemon's shutdown.
Outcome = Literal["promoted", "rejected", "unchanged", "failed", "busy", "already_run", "stopped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

#: How long to wait for a SIGKILLed process to be reaped before giving up on it.
_KILL_WAIT_S = 5.0
#: The child's log lines (`daemon.runtime.retrain_child.CHILD_LOG_FORMAT`).
_CHILD_RECORD = re.compile(
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<name>[\w.-]+): (?P<message>.*)"
)


@dataclass(frozen=True)
class RunResult:
    """One retrain attempt as the daemon saw it.

    `report` is the trainer's report (the document `regimed retrain --json` prints) when the
    child printed one: always for promoted and rejected, usually for failed.
    """

    trigger: str
    outcome: Outcome
    duration_seconds: float
    report: RetrainReport | None = None
    reason: str = ""
    returncode: int | None = None
    started_at: dt.datetime | None = None
    #: the run of the group that served this run's window (outcome already_run)
    already_run: RetrainRun | None = None

    @property
    def version(self) -> str | None:
        """The version of the candidate the run registered, if it got that far."""
        return None if self.report is None else self.report.version

    @property
    def promoted(self) -> bool:
        """Whether the run made a new champion."""
        return self.outcome == "promoted"



class RetrainRunner:
    """Runs retrains, one call at a time, each in a child process it supervises.

    `stop` is the daemon's stop event: once set, a running child is terminated (SIGTERM, then
    SIGKILL after `process.stop_grace_seconds`) and no new one is started; a run past
    `process.timeout_seconds` is stopped the same way. `poll_seconds` is how often the child's
    exit and log are looked at. `python` is the interpreter that runs the child (tests
    substitute a stand-in).
    """

    def __init__(
        self,
        config: Config,
        *,
        stop: threading.Event | None = None,
        process: RetrainProcessConfig | None = None,
        python: str = sys.executable,
        poll_seconds: float = 0.2,
    ) -> None:
        self.config = config
        self.stop_event = stop if stop is not None else threading.Event()
        self.process = process or RetrainProcessConfig()
        self.python = python
        self.poll_seconds = poll_seconds

    @property
    def command(self) -> list[str]:
        """The child's command line. `-P`: import regimed as installed, never from a `daemon`
        folder that happens to be in the working directory."""
        return [self.python, "-P", "-m", "daemon.runtime.retrain_child"]

    def environment(self, n_jobs: int) -> dict[str, str]:
        """The child's environment: the daemon's, with every thread pool of the numeric
        libraries capped at `n_jobs` and OpenMP's waiting threads asleep, so the retrain yields
        the cores to the consumer and the writer. In the environment, not set by the child:
        the libraries read it once, when they load."""
        return thread_environment(n_jobs, os.environ)

    def stop(self) -> None:
        """Terminate a running retrain and refuse new ones (returns at once)."""
        self.stop_event.set()

    def run(self, trigger: str, window: RetrainWindow | None = None) -> RunResult:
        """Run one retrain in a child process and wait for it (or for the stop event);
        `window`: what it serves, so that it runs once per group (daemon.training.window).

        Never raises for what can go wrong with the child: that is the result's outcome.
        """
        started_at = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        if self.stop_event.is_set():
            reason = "not started: the daemon is stopping"
            return RunResult(trigger, "stopped", 0.0, reason=reason, started_at=started_at)
        # "auto" threads: the cores the consumer and the writer leave (daemon.training.threads)
        n_jobs = resolve_n_jobs(self.config.training.n_jobs, reserved=DAEMON_CORES)
        training = dataclasses.replace(self.config.training, n_jobs=n_jobs)
        request = {
            "trigger": trigger,
            "config": config_document(self.config.replace(training=training)),
            "grace_seconds": self.process.stop_grace_seconds,
            "log_level": logging.getLogger().getEffectiveLevel(),
            "window": None if window is None else window.to_json(),
        }
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                child = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    env=self.environment(n_jobs),
                    start_new_session=True,  # our signals reach the child's whole group only
                )
            except OSError as exc:
                reason = f"cannot start the retrain process ({self.python}): {exc}"
                logger.error("retrain (%s): %s", trigger, reason)
                return RunResult(
                    trigger, "failed", time.monotonic() - t0, reason=reason, started_at=started_at
                )
            logger.info("retrain (%s) started in process %d", trigger, child.pid)
            log = _ChildLog(err.fileno(), child.pid)
            try:
                ended_by = self._supervise(child, request, t0, log)
            finally:
                self._reap(child)
                log.pump(final=True)
            out.seek(0)
            output = _parse_report(out.read())
        if isinstance(output, RetrainRun):
            result = self._already_run(trigger, child.returncode, output, window, t0, started_at)
        else:
            result = self._result(trigger, child.returncode, ended_by, output, log, t0, started_at)
        self._log(result)
        return result

    # -- supervising ---------------------------------------------------------------------------

    def _supervise(
        self,
        child: subprocess.Popen[bytes],
        request: Mapping[str, Any],
        t0: float,
        log: _ChildLog,
    ) -> Literal["exit", "stop", "timeout"]:
        assert child.stdin is not None
        try:
            child.stdin.write((json.dumps(request) + "\n").encode())
            child.stdin.flush()
        except BrokenPipeError:
            pass  # the child died at once; its exit status and log say why
        limit = self.process.timeout_seconds
        while True:
            log.pump()
            if child.poll() is not None:
                return "exit"
            if self.stop_event.wait(self.poll_seconds):
                logger.info("stopping the retrain process %d (SIGTERM)", child.pid)
                self._terminate(child)
                return "stop"
            if limit and time.monotonic() - t0 >= limit:
                logger.error(
                    "the retrain process %d has run for %.0f s: stopping it "
                    "(retrain.timeout_seconds = %g)",
                    child.pid,
                    time.monotonic() - t0,
                    limit,
                )
                self._terminate(child)
                return "timeout"

    def _terminate(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM, and SIGKILL when the child has not exited after the grace period."""
        _signal_group(child, signal.SIGTERM)
        grace = self.process.stop_grace_seconds
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning(
                "the retrain process %d did not stop within %g s of SIGTERM: killing it",
                child.pid,
                grace,
            )
            _signal_group(child, signal.SIGKILL)

    def _reap(self, child: subprocess.Popen[bytes]) -> None:
        """Make sure the child is gone and waited for, whatever happened in between."""
        if child.poll() is None:
            _signal_group(child, signal.SIGKILL)
        try:
            child.wait(timeout=_KILL_WAIT_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            logger.error("the retrain process %d does not die; leaving it", child.pid)
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()

    # -- the result ----------------------------------------------------------------------------

    def _result(
        self,
        trigger: str,
        returncode: int | None,
        ended_by: str,
        report: RetrainReport | None,
        log: _ChildLog,
        t0: float,
        started_at: dt.datetime,
    ) -> RunResult:
        outcome: Outcome
        registered = report is not None and report.outcome in ("promoted", "rejected", "unchanged")
        if report is not None and (registered or returncode == EXIT_OK):
            # A run that finished just as the stop came has registered its model all the same.
            outcome = (
                "promoted"
                if report.promoted
                else "unchanged"
                if report.outcome == "unchanged"
                else "rejected"
            )
            reason = report.reason or ""
        elif ended_by == "stop":
            outcome, reason = "stopped", "stopped by the daemon's shutdown; the champion is kept"
        elif returncode in (EXIT_TERMINATED, -signal.SIGTERM):
            # systemd stopping the whole unit, or an operator: not a failure of the retrain
            outcome = "stopped"
            reason = "the retrain process was terminated (SIGTERM); the champion is kept"
        elif ended_by == "timeout":
            outcome = "failed"
            reason = f"timed out after {self.process.timeout_seconds:g} s; the champion is kept"
        elif returncode == EXIT_BUSY:
            outcome = "busy"
            reason = log.last_problem or "another retrain is running on this store"
        elif returncode is not None and returncode < 0:
            outcome = "failed"
            reason = f"the retrain process was killed by {signal.Signals(-returncode).name}"
            if -returncode == signal.SIGKILL:
                reason += " (out of memory?)"
        elif returncode == EXIT_OK:
            outcome, reason = "failed", "the retrain process exited without a report"
        else:
            outcome = "failed"
            reason = (report.reason if report is not None else None) or (
                log.last_problem or f"the retrain process exited with code {returncode}"
            )
        return RunResult(
            trigger=trigger,
            outcome=outcome,
            duration_seconds=round(time.monotonic() - t0, 3),
            report=report,
            reason=reason,
            returncode=returncode,
            started_at=started_at,
        )

    def _already_run(
        self,
        trigger: str,
        returncode: int | None,
        served: RetrainRun,
        window: RetrainWindow | None,
        t0: float,
        started_at: dt.datetime,
    ) -> RunResult:
        """The child found the window served by `served` and trained nothing."""
        outcome: Outcome = "failed"
        reason = f"the retrain process printed a retrain run, not a report (exit {returncode})"
        if returncode == EXIT_ALREADY_RUN and window is not None:
            outcome, reason = "already_run", window.done_by(served)
        return RunResult(
            trigger=trigger,
            outcome=outcome,
            duration_seconds=round(time.monotonic() - t0, 3),
            reason=reason,
            returncode=returncode,
            started_at=started_at,
            already_run=served if outcome == "already_run" else None,
        )

    def _log(self, result: RunResult) -> None:
        quiet = result.outcome in ("promoted", "rejected", "unchanged", "already_run", "stopped")
        level = logging.INFO if quiet else logging.WARNING
        logger.log(
            level,
            "retrain (%s) %s after %.1f s%s: %s",
            result.trigger,
            result.outcome,
            result.duration_seconds,
            f", version {result.version}" if result.version else "",
            result.reason,
        )


class _ChildLog:
    """Forwards the child's log lines, as they come, to the daemon's loggers.

    The child writes its log to a temporary file (`CHILD_LOG_FORMAT`); `pump` reads what is new
    with `pread` (the child's write offset stays untouched) and re-logs each record under the
    child's logger name and level, so a warning of the trainer reaches the daemon's journal
    when it happens. Lines of no record (a traceback, a library's print) keep the level of the
    record before them.
    """

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid
        self.offset = 0
        self.partial = b""
        self.level = logging.INFO
        self.name = "daemon.runtime.retrain_child"
        #: The message of the child's last WARNING (or worse) record: why a run failed.
        self.last_problem = ""

    def pump(self, *, final: bool = False) -> None:
        """Forward the complete lines written since the last call (with `final`, all)."""
        while chunk := os.pread(self.fd, 1 << 16, self.offset):
            self.offset += len(chunk)
            self.partial += chunk
        *lines, self.partial = self.partial.split(b"\n")
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        for raw in lines:
            self._forward(raw.decode("utf-8", errors="replace").rstrip())

    def _forward(self, line: str) -> None:
        if not line:
            return
        match = _CHILD_RECORD.match(line)
        if match is not None:
            self.level = logging.getLevelNamesMapping()[match["level"]]
            self.name, line = match["name"], match["message"]
            if self.level >= logging.WARNING:
                self.last_problem = line
        logging.getLogger(self.name).log(self.level, "[retrain %d] %s", self.pid, line)


def _signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the child's process group (it leads its own session), unless it is reaped."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


def _parse_report(stdout: bytes) -> RetrainReport | RetrainRun | None:
    """The report the child printed, or the run that served its window already (the child's
    `{ALREADY_RUN: row}`); None when it printed none (or not a JSON object)."""
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        logger.error("the retrain process printed something other than a JSON report")
        return None
    if not isinstance(report, dict):
        return None
    served = report.get(ALREADY_RUN)
    if isinstance(served, dict) and len(report) == 1:
        try:
            return retrain_run(served)
        except (KeyError, TypeError, ValueError):
            logger.error("the retrain process printed a malformed retrain run: %s", served)
            return None
    return RetrainReport.from_json(report)
