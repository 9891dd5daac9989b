"""The truth: the SQLite store (bars, samples, offsets, predictions, counters), its migrations,
its writer process and the file locks; this package hands on the public names."""

from __future__ import annotations

from daemon.store.batch import BatchResult
from daemon.store.sqlite import SYNCHRONOUS, Store

__all__ = ["SYNCHRONOUS", "BatchResult", "Store"]
