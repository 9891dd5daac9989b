"""The SQLite store: bars, samples, Kafka offsets, predictions, counters and the model registry.

The SQLite copy is the truth: a consumer batch (its bars, samples, labels,
predictions, counters *and* its Kafka offsets) is written by `Store.write_batch` in one
`BEGIN IMMEDIATE` transaction, and only then are the offsets committed to Kafka. On partition
assignment the consumer seeks to `Store.offsets`, so a crash anywhere loses nothing and stores
nothing twice.

Durability: WAL journal with `synchronous=FULL`. In WAL mode `NORMAL` survives a process crash
but may roll back the last transactions on power loss or a kernel crash, after their offsets
were committed to Kafka and their alerts sent and models swapped; `FULL` fsyncs the WAL at every
commit, one fsync per batch, which docs/benchmarks.md measures as cheap at this data rate.

One process writes through one connection; the connection is shared between the threads of
that process under a lock (the consumer writes batches, the trainer reads samples and writes
registry rows). Other processes may open the file with `read_only=True`.

Features are stored as one little-endian float32 BLOB per sample (chosen by measurement, see
docs/benchmarks.md); every sample records its `feature_version`, and `feature_sets` records the
feature count of each version, so a read never reinterprets bytes of one layout as another.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlite_utils import Database

from daemon.config import StoreConfig
from daemon.errors import ForeignStoreError, StoreCorruptError, StoreError
from daemon.store.batch import BatchResult, BatchWrites
from daemon.store.connected import SqlConnection
from daemon.store.dialect import SQLITE, Dialect
from daemon.store.migrations import LATEST_VERSION, migrate, schema_version
from daemon.store.reads import Reads
from daemon.store.samples import SampleReads

logger = logging.getLogger(__name__)

__all__ = [
    "SYNCHRONOUS",
    "BatchResult",
    "Store",
]


#: The `PRAGMA synchronous` level of the writer connection (see the module docstring).
SYNCHRONOUS = "FULL"
#: Page cache of the writer connection, in KiB. A batch of the live stream touches a leaf page
#: per symbol in each of bars, samples and their indexes; with SQLite's default 2 MiB those
#: pages are read back at every batch and dirty ones spill mid-transaction (docs/benchmarks.md,
#: "Ingest"). The memory is taken only as pages are used.
CACHE_KIB = 64 * 1024
#: With `Store.checkpoint_in_background`: the WAL size (pages) at which the committing thread
#: checkpoints after all (SQLite's default is 1,000, which a consumer batch exceeds).
BACKSTOP_CHECKPOINT_PAGES = 50_000
#: Seconds `close` waits for the background checkpoint to finish.
CHECKPOINT_JOIN_S = 30.0
#: At most this many problems of `PRAGMA quick_check` are collected (and the first few named).
QUICK_CHECK_PROBLEMS = 10


class Store(BatchWrites, Reads, SampleReads):
    """The regimed database: open it once per process, write batches, read training data.

    Opening migrates the file to the newest schema (unless `read_only`). Use it as a context
    manager or call `close()`. One class, one mixin per idea: this module opens, checks and
    closes the file and runs transactions; `BatchWrites` (batch.py) writes a batch, `Reads`
    (reads.py) reads bars, offsets and counters, `SampleReads` (samples.py) reads samples.
    `Store.open` with a `store.url` opens the PostgreSQL store instead (`PostgresStore`,
    daemon.store.postgres), which shares the mixins and differs in its `dialect`.
    """

    dialect: Dialect = SQLITE
    #: Whether several daemons, on several hosts, share the store: then the registry keeps the
    #: model artifacts in the database too (daemon.registry.shared) and batches may commit out
    #: of outbox id order (daemon.store.outbox). An SQLite file is one daemon's.
    shared: bool = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 5_000,
        read_only: bool = False,
        quick_check_seconds: float = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.quick_check_seconds = quick_check_seconds
        if (
            isinstance(busy_timeout_ms, bool)
            or not isinstance(busy_timeout_ms, int)
            or (busy_timeout_ms < 0)
        ):
            raise StoreError(f"busy_timeout_ms = {busy_timeout_ms!r}: expected an integer >= 0")
        self.busy_timeout_ms = busy_timeout_ms
        self.read_only = read_only
        self._lock = threading.RLock()
        self._closed = False
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_due = threading.Event()
        self._checkpoint_stop = False
        try:
            if read_only:
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=self.busy_timeout_ms / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                self._conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout_ms / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
        try:
            self._db = Database(self._conn, execute_plugins=False)
            self._prepare()
        except BaseException as exc:
            self._conn.close()
            self._closed = True
            code = _primary_code(exc)
            if code == sqlite3.SQLITE_NOTADB:
                raise ForeignStoreError(
                    f"{self.path}: not an SQLite database, so not a regimed store (a wrong "
                    "store.path, or a store whose first page is damaged: restore it from a "
                    "backup); the file was left untouched"
                ) from None
            if code == sqlite3.SQLITE_CORRUPT:
                raise StoreCorruptError(self._damaged(str(exc))) from None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
            raise

    @classmethod
    def open(cls, config: StoreConfig, *, read_only: bool = False, check: bool = False) -> Store:
        """Open the store that `config` (the `[store]` section) describes; with `check`, run
        the bounded integrity check of `store.quick_check_seconds` first (the daemon's
        start-up). A `store.url` opens the shared PostgreSQL store (no file check there)."""
        if config.url:
            from daemon.store.postgres import PostgresStore

            return PostgresStore.connect(config, read_only=read_only)
        return cls(
            config.path,
            busy_timeout_ms=config.busy_timeout_ms,
            read_only=read_only,
            quick_check_seconds=config.quick_check_seconds if check else 0.0,
        )

    def _prepare(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        self._refuse_foreign()
        if self.quick_check_seconds > 0:
            self._quick_check(self.quick_check_seconds)
        if self.read_only:
            version = schema_version(self._db, self.path)
            if version != LATEST_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, expected {LATEST_VERSION}; open it "
                    "once without read_only (e.g. start the daemon) to migrate it"
                )
            return
        if self.path != ":memory:":
            self._db.enable_wal()
            mode = self._db.journal_mode
            if mode != "wal":
                raise StoreError(
                    f"{self.path}: journal_mode is {mode!r}, expected 'wal' (WAL needs a local "
                    "file system with shared memory)"
                )
        self._conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        migrate(self._db, where=self.path)

    def _schema_version(self) -> int:
        return schema_version(self._db, self.path)

    def _refuse_foreign(self) -> None:
        """ForeignStoreError when the file holds tables but no regimed migration record (or
        records of another program), before anything is written to it."""
        if schema_version(self._db, self.path) > 0:
            return
        objects = self._conn.execute(
            "SELECT type, name FROM sqlite_master ORDER BY type, name LIMIT 4"
        ).fetchall()
        if objects:
            shown = ", ".join(f"{kind} {name}" for kind, name in objects[:3])
            raise ForeignStoreError(
                f"{self.path}: an SQLite database with no regimed migration record ({shown}"
                f"{', ...' if len(objects) > 3 else ''}): not a regimed store, left untouched; "
                "point store.path at a new file or at a regimed store"
            )

    def _quick_check(self, budget_s: float) -> None:
        """`PRAGMA quick_check`, interrupted after `budget_s` seconds: StoreCorruptError
        naming the file and the first problems when the part read is damaged.

        quick_check reads every page of the file (it skips only the comparison of each index
        with its table), so its cost grows with the store; the deadline keeps a huge store's
        start-up bounded, at the price of leaving the rest of the file unchecked (logged)."""
        started = time.monotonic()
        timer = threading.Timer(budget_s, self._conn.interrupt)
        timer.start()
        try:
            rows = self._conn.execute(f"PRAGMA quick_check({QUICK_CHECK_PROBLEMS})").fetchall()
        except sqlite3.DatabaseError as exc:
            if _primary_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise StoreCorruptError(self._damaged(f"PRAGMA quick_check: {exc}")) from None
            if _primary_code(exc) != sqlite3.SQLITE_INTERRUPT:
                raise
            logger.info(
                "%s: quick_check found no problem in %.1f s and stopped there "
                "(store.quick_check_seconds); the rest of the file is unchecked",
                self.path,
                time.monotonic() - started,
            )
            return
        finally:
            timer.cancel()
            timer.join()
        # One line each, without the "*** in database main ***" heading of the first.
        problems = [
            " ".join(str(row[0]).replace("*** in database main ***", "").split())
            for row in rows
            if row[0] != "ok"
        ]
        if problems:
            found = "; ".join(problems[:3])
            raise StoreCorruptError(self._damaged(f"PRAGMA quick_check: {found}"))
        logger.info("%s: quick_check ok in %.2f s", self.path, time.monotonic() - started)

    def _damaged(self, found: str) -> str:
        return (
            f"{self.path}: the store is damaged ({found}); stop every process that uses it "
            'and restore it from a backup (docs/operations.md, "Back up and restore the store")'
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"<Store {self.path} {state}>"

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Closing twice is harmless."""
        self._stop_checkpointer()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def checkpoint_in_background(self) -> None:
        """Copy the WAL into the database on a thread of its own, after each `write_batch`,
        instead of in the committing thread (SQLite's automatic checkpoint).

        A checkpoint copies a batch's pages into the database file and syncs it: about half
        of a consumer batch's commit (docs/benchmarks.md, "Ingest"). SQLite runs it without
        Python's GIL, so on its own connection it overlaps with the next batch's statements.
        The automatic checkpoint stays as a backstop at `BACKSTOP_CHECKPOINT_PAGES` in case
        the thread falls behind. For the store's writer process (`daemon.store.writer`)."""
        if self.read_only or self.path == ":memory:" or self._checkpointer is not None:
            return
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}")
        self._checkpoint_due.clear()
        self._checkpoint_stop = False
        thread = threading.Thread(
            target=self._checkpoint_loop, name="store-checkpoint", daemon=True
        )
        self._checkpointer = thread
        thread.start()

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000)
        try:
            while not self._checkpoint_stop:
                if not self._checkpoint_due.wait(1.0):
                    continue
                self._checkpoint_due.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the backstop checkpoint covers for it
                    logger.warning("%s: background checkpoint failed: %s", self.path, exc)
        finally:
            conn.close()

    def _stop_checkpointer(self) -> None:
        thread, self._checkpointer = self._checkpointer, None
        if thread is not None:
            self._checkpoint_stop = True
            self._checkpoint_due.set()
            thread.join(CHECKPOINT_JOIN_S)

    @contextmanager
    def _transaction(self, what: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction under the store lock: BEGIN IMMEDIATE for writes, BEGIN for reads.

        Any exception rolls everything back; sqlite3 errors become StoreError naming the file.
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed; cannot {what}")
            if write and self.read_only:
                raise StoreError(f"{self.path}: opened read-only; cannot {what}")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.path}: cannot {what}: {exc} (after waiting up to "
                    f"busy_timeout_ms={self.busy_timeout_ms})"
                ) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: cannot {what}: {exc}") from exc
                raise

    # -- the model registry (daemon.registry.versions) keeps its tables in this file ---------

    def transaction(self, what: str, *, write: bool) -> AbstractContextManager[SqlConnection]:
        """A transaction on the store's connection under its lock, for modules that keep their
        own tables in this file (daemon.registry.versions); `what` names it in errors."""
        return self._transaction(what, write=write)


def _primary_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of an sqlite3 error (e.g. SQLITE_CORRUPT for any of its
    extended codes), None for another exception."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF
