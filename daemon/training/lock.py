"""One retrain at a time per store: an exclusive `flock` on a file beside the database.

The kernel drops the lock when its holder dies, so a crashed retrain never leaves a stale
lock behind; the file keeps the holder's pid only to name it in the message (`daemon.store.locks`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from daemon.errors import RegimedError, RetrainBusy
from daemon.store.locks import pid_lock


def lock_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the retrain lock of the store at `store_path` lives."""
    path = Path(store_path)
    return path.with_name(path.name + ".retrain.lock")


def retrain_lock(
    store_path: str | os.PathLike[str], timeout_s: float = 0.0
) -> contextlib.AbstractContextManager[Path]:
    """Hold the store's retrain lock for the block; RetrainBusy when another process holds it
    for longer than `timeout_s` seconds."""
    path = lock_path(store_path)

    def busy(holder: str) -> RegimedError:
        return RetrainBusy(
            f"another retrain is running on this store (pid {holder}, lock {path}); "
            "wait for it to finish or raise training.lock_timeout_seconds"
        )

    return pid_lock(path, busy, timeout_s)
