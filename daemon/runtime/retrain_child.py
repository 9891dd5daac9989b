"""The retrain child process: `python -P -m daemon.runtime.retrain_child`.

It reads the request (the trigger and the daemon's effective configuration as plain JSON
values, `config_document`) on standard input, trains, prints the report on standard output and
exits with one of the codes below; `daemon.runtime.retrain_runner` is the parent's side and
describes the protocol, the logging and how the child is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from types import FrameType
from typing import IO, Any

from daemon.config import Config, build_config
from daemon.config.settings import Secret
from daemon.errors import (
    RegimedError,
    RetrainAlreadyRun,
    RetrainBusy,
    RetrainFailed,
    RetrainTerminated,
)
from daemon.monitor.alerts import send_alert
from daemon.training.window import RetrainWindow

__all__ = [
    "ALREADY_RUN",
    "CHILD_LOG_FORMAT",
    "EXIT_ALREADY_RUN",
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "config_document",
    "config_from_document",
]

#: By name: the child runs this module as `__main__`.
logger = logging.getLogger("daemon.runtime.retrain_child")

EXIT_OK = 0
EXIT_FAILED = 1
#: The child's exit code when another retrain holds the lock (sysexits EX_TEMPFAIL).
EXIT_BUSY = 75
#: The child's exit code when a run of the group served the request's window already; it
#: prints `{ALREADY_RUN: <that run's retrain_runs row>}` instead of a report.
EXIT_ALREADY_RUN = 3
ALREADY_RUN = "already_run"
#: The child's exit code after it stopped on SIGTERM (or on its parent's death).
EXIT_TERMINATED = 128 + signal.SIGTERM

#: The child's log lines (the daemon adds its own time stamps when it forwards them).
CHILD_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def config_document(config: Config) -> dict[str, Any]:
    """`config` as plain JSON values, secrets revealed: what `config_from_document` rebuilds.

    Only for handing the configuration to a child process through a pipe; never log it.
    """
    document: dict[str, Any] = _plain(config)
    # the custom models as the [models.NAME] tables of a configuration file
    document["models"].pop("custom")
    for model in config.models.custom:
        document["models"][model.name] = _plain(model.table())
    return document


def config_from_document(document: Mapping[str, Any]) -> Config:
    """The `Config` that `config_document` described, validated like a configuration file
    (environment overrides are not applied again: they are already in the values)."""
    return build_config(document, {})


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


#: Set once SIGTERM arrived: whatever the retrain then ends with is the termination's doing.
_TERMINATED = threading.Event()


def _sigterm_handler(grace_seconds: float) -> Callable[[int, FrameType | None], None]:
    """The child's SIGTERM handler: unwind the retrain by raising `RetrainTerminated`, once.

    An exception raised from a signal handler can be swallowed: when it lands while a
    finalizer (`__del__`, a weakref callback) or a library's catch-all runs, Python reports it
    as ignored and the retrain goes on. A backstop thread therefore exits the process outright
    if it is still alive `grace_seconds` after the signal, so a terminated retrain always ends
    even when nobody follows up with SIGKILL.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # unwind once
        _TERMINATED.set()
        threading.Thread(
            target=_exit_after, args=(grace_seconds,), name="sigterm-backstop", daemon=True
        ).start()
        raise RetrainTerminated

    return handler


def _exit_after(grace_seconds: float) -> None:
    time.sleep(grace_seconds)
    # Straight to the descriptor: a logging handler's lock may be held by the stuck thread.
    message = f"the retrain did not unwind within {grace_seconds:g} s of SIGTERM: exiting\n"
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), message.encode())
    os._exit(EXIT_TERMINATED)


def _read_line(fd: int) -> bytes:
    """One line from `fd`, read unbuffered (a buffered reader would take the bytes after it)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data


def _watch_parent(fd: int, grace_seconds: float) -> None:
    """Read `fd` (the parent's end of the pipe) to its end: the parent is gone. Terminate
    like on SIGTERM, and exit outright if the retrain has not unwound after the grace."""
    while os.read(fd, 4096):
        pass
    logger.warning("the daemon is gone: stopping the retrain")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_seconds)
    os._exit(EXIT_TERMINATED)


def _write_report(stream: IO[str], report: Mapping[str, Any]) -> None:
    stream.write(json.dumps(report) + "\n")
    stream.flush()


def _child() -> int:
    """Entry point of the retrain process: read the request, train, print the report."""
    report_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library chatter must not reach the report
    stdin = sys.stdin.fileno()
    try:
        request = json.loads(_read_line(stdin))
        trigger = str(request["trigger"])
        grace = float(request["grace_seconds"])
        level = int(request.get("log_level", logging.INFO))
        served = request.get("window")
        window = None if served is None else RetrainWindow.from_json(served)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        sys.stderr.write(f"error: expected a retrain request as JSON on standard input: {exc}\n")
        return EXIT_FAILED
    logging.basicConfig(level=level, format=CHILD_LOG_FORMAT, stream=sys.stderr)
    signal.signal(signal.SIGTERM, _sigterm_handler(grace))
    try:
        # A daemon thread: it blocks on the pipe until the parent closes it, which the parent
        # does only after this process has exited; it holds no lock the exit needs (os.read).
        threading.Thread(
            target=_watch_parent, args=(stdin, grace), name="parent-watch", daemon=True
        ).start()
        code = _train(request["config"], trigger, report_stream, window)
    except RetrainTerminated:
        code = EXIT_FAILED
    except BaseException:
        # The exception raised from the handler can come out as another one: a library that
        # catches it mid-way raises its own (numpy's buffer-format parser, met while a module
        # was being imported, turns it into a ValueError that fails the import).
        if not _TERMINATED.is_set():
            raise
        code = EXIT_FAILED
    if _TERMINATED.is_set() and code != EXIT_OK:
        logger.warning("terminated: the retrain is abandoned, the champion is kept")
        return EXIT_TERMINATED
    return code


def _train(
    document: Mapping[str, Any],
    trigger: str,
    report_stream: IO[str],
    window: RetrainWindow | None,
) -> int:
    from daemon.training.trainer import retrain

    try:
        config = config_from_document(document)
        alert = partial(send_alert, config.alerts)
        report = retrain(config, trigger=trigger, alert=alert, window=window)
    except RetrainBusy as exc:
        logger.warning("%s", exc)  # expected now and then: the daemon counts it as skipped
        return EXIT_BUSY
    except RetrainAlreadyRun as exc:
        logger.info("%s", exc)
        _write_report(report_stream, {ALREADY_RUN: exc.run})
        return EXIT_ALREADY_RUN
    except RetrainFailed as exc:
        _write_report(report_stream, exc.report)
        logger.error("%s", exc)
        return EXIT_FAILED
    except RegimedError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    _write_report(report_stream, report.to_json())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(_child())
