"""One retrain at a time per store: an exclusive `flock` on a file beside the database.

The kernel drops the lock when its holder dies, so a crashed retrain never leaves a stale
lock behind; the file keeps the holder's pid only to name it in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from daemon.errors import RegimedError


class RetrainBusy(RegimedError):
    """Another retrain holds the lock of this store."""


def lock_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the retrain lock of the store at `store_path` lives."""
    path = Path(store_path)
    return path.with_name(path.name + ".retrain.lock")


@contextlib.contextmanager
def retrain_lock(store_path: str | os.PathLike[str], timeout_s: float = 0.0) -> Iterator[Path]:
    """Hold the store's retrain lock for the block; RetrainBusy when another process holds it
    for longer than `timeout_s` seconds."""
    path = lock_path(store_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise RetrainBusy(
                        f"another retrain is running on this store (pid {holder}, lock {path}); "
                        "wait for it to finish or raise training.lock_timeout_seconds"
                    ) from None
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
