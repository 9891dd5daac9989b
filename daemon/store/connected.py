"""What the parts of `Store` share: the file, its connection and a transaction under its lock.

`Store` (daemon.store.sqlite) is one class built from one mixin per idea: the connection and its
checks (sqlite.py), the batch write (batch.py), the reads of bars, offsets and counters
(reads.py) and the reads of samples (samples.py). Each mixin subclasses `Connected`, which
names what they use and `Store` provides.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager

from sqlite_utils import Database


class Connected:
    """The attributes and the transaction that `Store` gives its mixins."""

    path: str
    _db: Database
    _checkpointer: threading.Thread | None
    _checkpoint_due: threading.Event

    def _transaction(
        self, what: str, *, write: bool
    ) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction under the store lock (`Store._transaction`)."""
        raise NotImplementedError
