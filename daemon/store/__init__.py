"""The truth: the store (bars, samples, offsets, predictions, counters) in an SQLite file or in
a PostgreSQL database that several daemons share, its migrations, its writer process and the
file locks; this package hands on the public names."""

from __future__ import annotations

from daemon.store.batch import BatchResult
from daemon.store.connected import SqlConnection
from daemon.store.sqlite import SYNCHRONOUS, Store

__all__ = ["SYNCHRONOUS", "BatchResult", "SqlConnection", "Store"]
