"""Exclusive locks beside the store: one daemon per store, one retrain per store.

Each lock is an exclusive `flock` on a sidecar file next to the database that holds the pid of
its holder. The kernel drops a `flock` when the last descriptor of its open file goes away,
which happens when the holder exits however it exits (SIGKILL included), so a stale lock is
impossible by construction; the pid in the file only names the holder in the message.

The descriptor is opened close-on-exec (Python's default, PEP 446), so the processes a holder
starts (the store's writer, a retrain) never hold the lock: it lives exactly as long as the
process that took it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.errors import RegimedError, StoreBusyError, StoreError

__all__ = ["daemon_lock", "daemon_lock_path", "pid_lock"]

#: How often a waiting `pid_lock` tries again.
_RETRY_S = 0.2


def pid_lock(
    path: Path, busy: Callable[[str], RegimedError], timeout_s: float = 0.0
) -> contextlib.AbstractContextManager[Path]:
    """Hold an exclusive `flock` on `path` (created 0600) for the block, with this process's
    pid written in it. When another process holds it for longer than `timeout_s` seconds,
    raise `busy(holder)`, where holder is the pid read from the file ("unknown" if empty)."""
    return _pid_lock(path, busy, timeout_s)


@contextlib.contextmanager
def _pid_lock(path: Path, busy: Callable[[str], RegimedError], timeout_s: float) -> Iterator[Path]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open the lock file: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise busy(holder) from None
                time.sleep(min(_RETRY_S, max(deadline - time.monotonic(), 0.01)))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def daemon_lock_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the daemon lock of the store at `store_path` lives: `<store>.lock`."""
    path = Path(store_path)
    return path.with_name(path.name + ".lock")


def daemon_lock(store_path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Hold the store's daemon lock for the block (`regimed run`, the demo's daemon): a second
    daemon on the same store raises StoreBusyError at once, naming the store and the pid that
    holds it. Read-only commands and `regimed retrain` do not take it."""
    lock = daemon_lock_path(store_path)

    def busy(holder: str) -> RegimedError:
        return StoreBusyError(
            f"{os.fspath(store_path)}: the store is held by another regimed daemon (pid "
            f"{holder}, lock {lock}); stop that daemon first, or point store.path at another "
            "file"
        )

    return pid_lock(lock, busy)
