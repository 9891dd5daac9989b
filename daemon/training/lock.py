"""One retrain at a time per store: an exclusive `flock` on a file beside the database, or on a
shared PostgreSQL store one session-level advisory lock for the whole group of daemons.

The kernel drops the `flock` when its holder dies, so a crashed retrain never leaves a stale
lock behind; the file keeps the holder's pid only to name it in the message (`daemon.store.locks`).
PostgreSQL drops the advisory lock with its holder's session, which ends when the holder dies,
so there too a dead retrain releases the lock and another daemon runs the next
(`daemon.store.postgres.advisory_lock`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from daemon.config import StoreConfig
from daemon.errors import RegimedError, RetrainBusy
from daemon.store.locks import pid_lock

#: The advisory lock key of the group's retrain on a PostgreSQL store (any fixed bigint).
RETRAIN_LOCK = 0x7265_7472_6169_6E  # "retrain"


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


def store_retrain_lock(
    store: StoreConfig, timeout_s: float = 0.0
) -> contextlib.AbstractContextManager[object]:
    """The retrain lock of the store that `store` describes: `retrain_lock` beside an SQLite
    file, the group's advisory lock on a PostgreSQL store (`store.url`), where RetrainBusy
    names the session of the daemon that retrains."""
    if not store.url:
        return retrain_lock(store.path, timeout_s)
    from daemon.store.postgres import advisory_lock

    def busy(holder: str) -> RegimedError:
        return RetrainBusy(
            f"another daemon of the group is retraining on this store ({holder}); it runs "
            "for all of them (raise training.lock_timeout_seconds to wait for it)"
        )

    return advisory_lock(store, RETRAIN_LOCK, busy, timeout_s)
