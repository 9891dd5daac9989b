"""The SQLite store: bars, samples, Kafka offsets, predictions, counters and the model registry.

The design makes the SQLite copy the truth: a consumer batch (its bars, samples, labels,
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

import datetime as dt
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlite_utils import Database

from daemon.config import StoreConfig
from daemon.domain import (
    BAR_FIELDS,
    REGIMES,
    SOURCES,
    VIX_SOURCES,
    BarRow,
    DeadLetterRow,
    LabelUpdate,
    PredictionRow,
    RowBlock,
    SampleRow,
    Source,
    check_day,
    check_source,
    check_text,
)
from daemon.errors import ForeignStoreError, StoreCorruptError, StoreError
from daemon.store.migrations import LATEST_VERSION, migrate, schema_version

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

KEY_ORDER: tuple[Source, ...] = ("archive", "live")  # the order of the samples primary key
BAR_COLUMNS = (
    "symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix", "vix_source",
)  # fmt: skip
SAMPLE_META_COLUMNS = ("symbol", "ts", "source", "regime", "weight", "label", "event")
_FIELD_SEP = "\x1f"  # ASCII unit separator: joins event names inside one aggregate
_KEY2 = operator.itemgetter(0, 1)  # (symbol, ts) of bar parameters
_KEY3 = operator.itemgetter(0, 1, 2)  # (source, symbol, ts) of sample and label parameters
# Rows to statement parameters, in the order of the INSERT and UPDATE statements below.
_LABEL_FIELDS = operator.attrgetter("source", "symbol", "ts", "label")
_SAMPLE_FIELDS = operator.attrgetter(
    "source", "symbol", "ts", "regime", "weight", "label", "event", "feature_version", "features"
)
#: Keys per statement of a multi-row lookup: 3 parameters each, under SQLite's 32,766.
_KEYS_PER_QUERY = 10_000


@dataclass(frozen=True)
class BatchResult:
    """What one `write_batch` changed; rewriting identical rows counts as unchanged."""

    bars_inserted: int = 0
    bars_corrected: int = 0
    bars_unchanged: int = 0
    samples_inserted: int = 0
    samples_replaced: int = 0
    samples_unchanged: int = 0
    labels_set: int = 0
    labels_missing: int = 0
    predictions_written: int = 0
    offsets_written: int = 0
    samples_removed: int = 0


_BAR_INSERT = (
    "INSERT INTO bars (symbol, ts, open, high, low, close, volume, regime, vix, vix_source) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING"
)
_BAR_CORRECT = """
UPDATE bars SET open = ?3, high = ?4, low = ?5, close = ?6, volume = ?7, regime = ?8, vix = ?9,
    vix_source = ?10
WHERE symbol = ?1 AND ts = ?2 AND (open IS NOT ?3 OR high IS NOT ?4 OR low IS NOT ?5
    OR close IS NOT ?6 OR volume IS NOT ?7 OR regime IS NOT ?8 OR vix IS NOT ?9
    OR vix_source IS NOT ?10)
"""
_SAMPLE_INSERT = (
    "INSERT INTO samples (source, symbol, ts, regime, weight, label, event, feature_version, "
    "features) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING"
)
# A NULL label never clears a known one: replaying a pending row must not forget its label.
_SAMPLE_REPLACE = """
UPDATE samples SET regime = ?4, weight = ?5, label = coalesce(?6, label), event = ?7,
    feature_version = ?8, features = ?9
WHERE source = ?1 AND symbol = ?2 AND ts = ?3 AND (regime IS NOT ?4 OR weight IS NOT ?5
    OR label IS NOT coalesce(?6, label) OR event IS NOT ?7 OR feature_version IS NOT ?8
    OR features IS NOT ?9)
"""
_LABEL_SET = (
    "UPDATE samples SET label = ?4 WHERE source = ?1 AND symbol = ?2 AND ts = ?3 "
    "AND label IS NOT ?4"
)
_PREDICTION_LABEL_SET = (
    "UPDATE predictions SET label = ?3 WHERE symbol = ?1 AND ts = ?2 AND label IS NOT ?3"
)
_PREDICTION_UPSERT = """
INSERT INTO predictions (symbol, ts, model_version, proba, prediction, regime, label)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (symbol, ts, model_version) DO UPDATE SET proba = excluded.proba,
    prediction = excluded.prediction, regime = excluded.regime,
    label = coalesce(excluded.label, predictions.label)
"""
_OFFSET_UPSERT = """
INSERT INTO kafka_offsets (topic, partition, next_offset) VALUES (?, ?, ?)
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""
_DEAD_LETTER_INSERT = """
INSERT OR IGNORE INTO dead_letters (source_topic, source_partition, source_offset, reason, key,
    value, headers, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_COUNTER_ADD = """
INSERT INTO counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
"""
_REGIME_CODE = (
    "CASE regime "
    + " ".join(f"WHEN '{name}' THEN '{code}'" for code, name in enumerate(REGIMES))
    + " ELSE '9' END"
)
# The skip-scan visits each symbol once through the primary key; the correlated subquery finds
# the ts of the n-th latest bar, so only the wanted rows are read.
_LAST_BARS = f"""
WITH RECURSIVE symbols (symbol) AS (
    SELECT (SELECT min(symbol) FROM bars)
    UNION ALL
    SELECT (SELECT min(symbol) FROM bars WHERE symbol > symbols.symbol)
    FROM symbols WHERE symbols.symbol IS NOT NULL
)
SELECT {", ".join(f"b.{c}" for c in BAR_COLUMNS)}
FROM symbols JOIN bars AS b ON b.symbol = symbols.symbol AND b.ts >= coalesce(
    (SELECT ts FROM bars AS x WHERE x.symbol = symbols.symbol ORDER BY ts DESC
     LIMIT 1 OFFSET :skip), '')
ORDER BY b.symbol, b.ts
"""  # noqa: S608 (constant column names)


class Store:
    """The regimed database: open it once per process, write batches, read training data.

    Opening migrates the file to the newest schema (unless `read_only`). Use it as a context
    manager or call `close()`.
    """

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
    def open(
        cls, config: StoreConfig, *, read_only: bool = False, check: bool = False
    ) -> Store:
        """Open the store that `config` (the `[store]` section) describes; with `check`, run
        the bounded integrity check of `store.quick_check_seconds` first (the daemon's
        start-up)."""
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

    # -- writes ----------------------------------------------------------------------------

    def write_batch(
        self,
        *,
        bars: Iterable[BarRow] = (),
        samples: Iterable[SampleRow] = (),
        labels: Iterable[LabelUpdate] = (),
        offsets: Mapping[tuple[str, int], int] | None = None,
        predictions: Iterable[PredictionRow] = (),
        counters: Mapping[str, int] | None = None,
        replace_events: Iterable[str] = (),
        block: RowBlock | None = None,
        dead_letters: Iterable[DeadLetterRow] = (),
    ) -> BatchResult:
        """Store one consumer batch atomically: all of it, or (on any exception) none of it.

        Bars and samples are upserts: an identical row changes nothing, a bar with new values
        for a stored (symbol, ts) replaces it and counts as corrected (also in the
        `bars_corrected` counter). A sample rewritten with `label=None` keeps a stored label.
        A live `LabelUpdate` also fills the label of the predictions for that symbol and day.
        `offsets` maps (topic, partition) to the next offset to consume and is stored exactly
        as given: the consumer decides, the store does not force offsets to move forward.
        `counters` adds non-negative increments to named counters. `replace_events` names
        archive events that `samples` rebuild whole: their stored archive samples not among
        `samples` are removed in the same transaction (`samples_removed`). `block` adds rows
        given as statement parameters (`RowBlock`), written after the row objects.
        `dead_letters` are rejected records the dead-letter topic did not take, parked here
        with the offsets that pass them.
        """
        bar_params = list(map(BAR_FIELDS, bars))
        sample_list = list(samples)
        sample_params = [
            (source, symbol, ts, regime, float(weight), label, event, version, vector.tobytes())
            for source, symbol, ts, regime, weight, label, event, version, vector in map(
                _SAMPLE_FIELDS, sample_list
            )
        ]
        feature_sizes = _feature_sizes(sample_list)
        label_params = list(map(_LABEL_FIELDS, labels))
        if block is not None:
            bar_params += block.bars
            sample_params += block.samples
            label_params += block.labels
            _block_feature_sizes(block, feature_sizes)
        # In key order, the b-tree work of a batch that spans many symbols moves from page to
        # neighbouring page instead of jumping across the table (docs/benchmarks.md, "Ingest").
        # The sorts are stable: rows with the same key keep their order, and so their effect.
        bar_params.sort(key=_KEY2)
        sample_params.sort(key=_KEY3)
        label_params.sort(key=_KEY3)
        prediction_params = [
            (p.symbol, p.ts, p.model_version, float(p.proba), int(p.prediction), p.regime,
             p.label)
            for p in predictions
        ]  # fmt: skip
        offset_params = _offset_params(offsets or {})
        counter_params = _counter_params(counters or {})

        rebuilt = sorted(set(replace_events))
        with self._transaction("write a batch", write=True) as conn:
            _register_feature_sets(conn, feature_sizes)
            samples_removed = _remove_unselected(conn, rebuilt, sample_params) if rebuilt else 0
            bars_inserted, bars_corrected = _upsert(conn, _BAR_INSERT, _BAR_CORRECT, bar_params)
            samples_inserted, samples_replaced = _upsert(
                conn, _SAMPLE_INSERT, _SAMPLE_REPLACE, sample_params
            )
            predictions_written = 0
            if prediction_params:
                predictions_written = conn.executemany(
                    _PREDICTION_UPSERT, prediction_params
                ).rowcount
            labels_set = labels_missing = 0
            if label_params:
                labels_set = conn.executemany(_LABEL_SET, label_params).rowcount
                if labels_set < len(label_params):
                    labels_missing = _missing_samples(conn, label_params)
                if conn.execute("SELECT 1 FROM predictions LIMIT 1").fetchone():
                    conn.executemany(
                        _PREDICTION_LABEL_SET,
                        [(symbol, ts, label) for source, symbol, ts, label in label_params
                         if source == "live"],
                    )  # fmt: skip
            if offset_params:
                conn.executemany(_OFFSET_UPSERT, offset_params)
            conn.executemany(_DEAD_LETTER_INSERT, dead_letters)
            if bars_corrected:
                counter_params.append(("bars_corrected", bars_corrected))
            if counter_params:
                conn.executemany(_COUNTER_ADD, counter_params)
        if self._checkpointer is not None:
            self._checkpoint_due.set()
        return BatchResult(
            bars_inserted=bars_inserted,
            bars_corrected=bars_corrected,
            bars_unchanged=len(bar_params) - bars_inserted - bars_corrected,
            samples_inserted=samples_inserted,
            samples_replaced=samples_replaced,
            samples_unchanged=len(sample_params) - samples_inserted - samples_replaced,
            labels_set=labels_set,
            labels_missing=labels_missing,
            predictions_written=predictions_written,
            offsets_written=len(offset_params),
            samples_removed=samples_removed,
        )

    # -- reads -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The recorded schema version (equal to the newest once the store is open)."""
        with self._transaction("read the schema version", write=False):
            return schema_version(self._db, self.path)

    def offsets(self, topic: str) -> dict[int, int]:
        """The stored next offset of every partition of `topic` (empty when none is stored)."""
        with self._transaction("read offsets", write=False) as conn:
            rows = conn.execute(
                "SELECT partition, next_offset FROM kafka_offsets WHERE topic = ?", (topic,)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def dead_letters(self) -> list[DeadLetterRow]:
        """The parked dead letters (`DeadLetterRow`), in source order."""
        with self._transaction("read dead letters", write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM dead_letters ORDER BY source_topic, source_partition, source_offset"
            ).fetchall()
        return [cast(DeadLetterRow, tuple(row)) for row in rows]

    def counter(self, name: str) -> int:
        """The value of one counter (0 when it was never incremented)."""
        with self._transaction("read a counter", write=False) as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        with self._transaction("read counters", write=False) as conn:
            rows = conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall()
        return {str(n): int(v) for n, v in rows}

    def bar_count(self) -> int:
        """How many bars are stored."""
        with self._transaction("count bars", write=False) as conn:
            return int(conn.execute("SELECT count(*) FROM bars").fetchone()[0])

    def bars(self, symbol: str | None = None, since: str | dt.date | None = None) -> pd.DataFrame:
        """Stored bars (of one symbol, from one day on) in (symbol, ts) order.

        Columns as `BarRow`; `ts` is datetime64[ns], prices are float64, `vix` NaN when unknown.
        """
        where, params = [], []
        if symbol is not None:
            where.append("symbol = ?")
            params.append(symbol)
        if since is not None:
            since_text = since.isoformat() if isinstance(since, dt.date) else since
            check_day("bars(since)", since_text)
            where.append("ts >= ?")
            params.append(since_text)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {', '.join(BAR_COLUMNS)} FROM bars {clause} ORDER BY symbol, ts"  # noqa: S608
        with self._transaction("read bars", write=False) as conn:
            rows = conn.execute(sql, params).fetchall()
        return _bars_frame(rows)

    def recent_bars(self, symbol: str, n: int) -> pd.DataFrame:
        """The latest `n` bars of one symbol, oldest first (what rebuilds its state)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise StoreError(f"recent_bars(n={n!r}): expected an integer >= 1")
        columns = ", ".join(BAR_COLUMNS)
        inner = "SELECT * FROM bars WHERE symbol = ? ORDER BY ts DESC LIMIT ?"
        sql = f"SELECT {columns} FROM ({inner}) ORDER BY ts"  # noqa: S608 - constant names
        with self._transaction("read recent bars", write=False) as conn:
            rows = conn.execute(sql, (symbol, n)).fetchall()
        return _bars_frame(rows)

    def last_bars(self, n_per_symbol: int) -> pd.DataFrame:
        """The latest `n_per_symbol` bars of every symbol, in (symbol, ts) order.

        This is what start-up needs to rebuild the per-symbol windows without a Kafka replay.
        """
        if isinstance(n_per_symbol, bool) or not isinstance(n_per_symbol, int) or n_per_symbol < 1:
            raise StoreError(f"last_bars(n_per_symbol={n_per_symbol!r}): expected an integer >= 1")
        with self._transaction("read the last bars", write=False) as conn:
            rows = conn.execute(_LAST_BARS, {"skip": n_per_symbol - 1}).fetchall()
        return _bars_frame(rows)

    def pending_samples(self, source: Source = "live") -> pd.DataFrame:
        """Samples still waiting for their label, in (symbol, ts) order (no features).

        Columns: symbol, ts, source, regime, weight, label (all missing), event.
        """
        check_source("pending_samples", source)
        with self._transaction("read pending samples", write=False) as conn:
            rows = conn.execute(
                # The planner, without statistics, would scan every sample of the source.
                "SELECT symbol, ts, source, regime, weight, label, event FROM samples "
                "INDEXED BY samples_pending WHERE source = ? AND label IS NULL "
                "ORDER BY symbol, ts",
                (source,),
            ).fetchall()
        frame = pd.DataFrame.from_records(rows, columns=list(SAMPLE_META_COLUMNS))
        return _typed_meta(frame)

    def sample_counts(self) -> dict[str, dict[str, int]]:
        """Samples per source and regime: {"live": {regime: n}, "archive": {regime: n}}.

        Every regime is present, with 0 when it has no samples.
        """
        counts: dict[str, dict[str, int]] = {s: dict.fromkeys(REGIMES, 0) for s in SOURCES}
        with self._transaction("count samples", write=False) as conn:
            rows = conn.execute(
                "SELECT source, regime, count(*) FROM samples GROUP BY source, regime"
            ).fetchall()
        for source, regime, n in rows:
            counts[source][regime] = int(n)
        return counts

    def read_samples(
        self,
        source: Source | None = None,
        labelled: bool | None = True,
        feature_version: int | None = None,
    ) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
        """Samples as (meta, X): meta has one row per sample, X the float32 feature matrix.

        `source` None reads both sources; `labelled` True reads labelled samples, False the
        pending ones, None both; `feature_version` restricts to one feature layout (required
        when the selection mixes layouts, which raises StoreError). Rows come in (source,
        symbol, ts) order, archive before live. meta columns: symbol, source, regime and event
        are categorical, ts datetime64[ns], weight float64, label int8 (nullable Int8 unless
        `labelled` is True). X is writable.
        """
        sources = KEY_ORDER if source is None else (source,)
        if source is not None:
            check_source("read_samples", source)
        with self._transaction("read samples", write=False) as conn:
            known = dict(conn.execute("SELECT version, n_features FROM feature_sets").fetchall())
            check_versions = feature_version is None and len(known) > 1
            weights = _constant_weights(conn, sources)
            groups = []
            for src in sources:
                sql, params = _samples_query(
                    src, labelled, feature_version, check_versions, weights is None
                )
                groups.extend(conn.execute(sql, params).fetchall())
        if check_versions:
            versions = sorted({g[3] for g in groups} | {g[4] for g in groups})
            if len(versions) > 1:
                raise StoreError(
                    f"{self.path}: the selected samples mix feature versions {versions}; pass "
                    "feature_version= to read one layout"
                )
        else:
            versions = [feature_version] if feature_version is not None else list(known)
        n_features = int(known.get(versions[0], 0)) if versions else 0
        return _decode_groups(self.path, groups, n_features, labelled is True, weights)

    # -- the model registry (daemon.registry.versions) keeps its tables in this file ---------

    def transaction(self, what: str, *, write: bool) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction on the store's connection under its lock, for modules that keep their
        own tables in this file (daemon.registry.versions); `what` names it in errors."""
        return self._transaction(what, write=write)


# -- helpers -------------------------------------------------------------------------------


def _primary_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of an sqlite3 error (e.g. SQLITE_CORRUPT for any of its
    extended codes), None for another exception."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _feature_sizes(samples: list[SampleRow]) -> dict[int, tuple[int, SampleRow]]:
    """The feature count of each feature_version in a batch (and a sample showing it)."""
    sizes: dict[int, tuple[int, SampleRow]] = {}
    for s in samples:
        n = s.features.shape[0]
        first = sizes.setdefault(s.feature_version, (n, s))
        if first[0] != n:
            raise StoreError(
                f"feature_version {s.feature_version}: sample {s.symbol} {s.ts} {s.source} has "
                f"{n} features, sample {first[1].symbol} {first[1].ts} {first[1].source} has "
                f"{first[0]}"
            )
    return sizes


def _block_feature_sizes(block: RowBlock, sizes: dict[int, tuple[int, SampleRow]]) -> None:
    """Add the feature count of each feature_version of a block's samples to `sizes` (as
    `_feature_sizes` gives them); a count that disagrees within the batch is refused."""
    first: dict[tuple[int, int], int] = {}
    for k, row in enumerate(block.samples):
        first.setdefault((row[7], len(row[8])), k)
    for (version, n_bytes), k in first.items():
        source, symbol, ts, regime, weight, label, _, _, vector = block.samples[k]
        example = SampleRow.unchecked(
            symbol, ts, source, regime, weight, label, np.frombuffer(vector, "<f4"), version
        )
        known = sizes.setdefault(version, (n_bytes // 4, example))
        if known[0] != n_bytes // 4:
            raise StoreError(
                f"feature_version {version}: sample {symbol} {ts} {source} has "
                f"{n_bytes // 4} features, sample {known[1].symbol} {known[1].ts} "
                f"{known[1].source} has {known[0]}"
            )


def _register_feature_sets(
    conn: sqlite3.Connection, sizes: Mapping[int, tuple[int, SampleRow]]
) -> None:
    """Record new feature versions; reject a sample whose length disagrees with its version."""
    for version, (n, sample) in sizes.items():
        row = conn.execute(
            "SELECT n_features FROM feature_sets WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO feature_sets (version, n_features) VALUES (?, ?)", (version, n)
            )
        elif int(row[0]) != n:
            raise StoreError(
                f"feature_version {version} has {row[0]} features in the store, but sample "
                f"{sample.symbol} {sample.ts} {sample.source} has {n}"
            )


def _upsert(
    conn: sqlite3.Connection, insert: str, update: str, params: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """Insert the rows that are new, then rewrite the stored rows whose values differ; returns
    (inserted, changed). When every row went in, nothing can differ and the update is skipped:
    the live stream's case, which halves the statements of a batch."""
    if not params:
        return 0, 0
    inserted = conn.executemany(insert, params).rowcount
    if inserted == len(params):
        return inserted, 0
    return inserted, conn.executemany(update, params).rowcount


def _remove_unselected(
    conn: sqlite3.Connection, events: list[str], sample_params: list[tuple[Any, ...]]
) -> int:
    """Delete the archive samples of `events` whose key is not among `sample_params` (the
    rebuilt selection); how many were deleted."""
    keep = {(p[1], p[2]) for p in sample_params if p[0] == "archive"}
    stored = [
        row
        for event in events
        for row in conn.execute(
            "SELECT symbol, ts FROM samples WHERE source = 'archive' AND event = ?", (event,)
        )
    ]
    gone = [("archive", symbol, ts) for symbol, ts in stored if (symbol, ts) not in keep]
    if gone:
        conn.executemany("DELETE FROM samples WHERE source = ? AND symbol = ? AND ts = ?", gone)
    return len(gone)


def _missing_samples(conn: sqlite3.Connection, keys: Sequence[tuple[str, str, str, int]]) -> int:
    """How many of these (source, symbol, ts, label) name no stored sample (with repeats)."""
    missing = 0
    for first in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[first : first + _KEYS_PER_QUERY]
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        sql = (
            f"WITH k (source, symbol, ts) AS (VALUES {values}) SELECT count(*) FROM k "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM samples AS s WHERE s.source = k.source "
            "AND s.symbol = k.symbol AND s.ts = k.ts)"
        )
        params = [v for source, symbol, ts, _ in chunk for v in (source, symbol, ts)]
        missing += int(conn.execute(sql, params).fetchone()[0])
    return missing


def _offset_params(offsets: Mapping[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    params = []
    for key, offset in offsets.items():
        topic, partition = key
        check_text("offsets", "topic", topic)
        for name, value in (("partition", partition), ("next_offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StoreError(f"offsets[{key!r}]: {name} = {value!r}: expected an integer >= 0")
        params.append((topic, partition, offset))
    return params


def _counter_params(counters: Mapping[str, int]) -> list[tuple[str, int]]:
    params = []
    for name, increment in counters.items():
        check_text("counters", "name", name)
        if isinstance(increment, bool) or not isinstance(increment, int) or increment < 0:
            raise StoreError(f"counters[{name!r}] = {increment!r}: expected an integer >= 0")
        params.append((name, increment))
    return params


def _bars_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Bars as a DataFrame: category symbol/regime/vix_source, datetime64[ns] ts, floats."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in BAR_COLUMNS]
    data: dict[str, Any] = dict(zip(BAR_COLUMNS, columns, strict=True))
    data["symbol"] = _categorical(data["symbol"])
    data["ts"] = np.array(data["ts"], dtype="datetime64[D]").astype("datetime64[ns]")
    for name in ("open", "high", "low", "close", "volume", "vix"):
        data[name] = np.array(data[name], dtype=np.float64)  # None (no VIX) becomes NaN
    data["regime"] = _categorical(data["regime"], _REGIME_DTYPE)
    data["vix_source"] = _categorical(data["vix_source"], _VIX_SOURCE_DTYPE)
    return pd.DataFrame(data)


_REGIME_DTYPE = pd.CategoricalDtype(list(REGIMES))
_VIX_SOURCE_DTYPE = pd.CategoricalDtype(list(VIX_SOURCES))


def _categorical(values: Sequence[Any], dtype: pd.CategoricalDtype | None = None) -> Any:
    """`pd.Categorical(values)` (categories: the sorted distinct values, or `dtype`'s; other
    values and None are missing), built from codes: a tenth of the time for a symbol's few
    hundred bars, which start-up reads for every symbol."""
    if dtype is None:
        dtype = pd.CategoricalDtype(sorted({v for v in values if v is not None}))
    code = {c: i for i, c in enumerate(dtype.categories)}
    codes = np.fromiter((code.get(v, -1) for v in values), dtype=np.int32, count=len(values))
    return pd.Categorical.from_codes(codes, dtype=dtype)


def _typed_meta(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a sample meta frame built from plain rows the dtypes `read_samples` returns."""
    frame["ts"] = pd.to_datetime(frame["ts"], format="%Y-%m-%d").astype("datetime64[ns]")
    frame["symbol"] = frame["symbol"].astype("category")
    frame["source"] = pd.Categorical(frame["source"], categories=list(SOURCES))
    frame["regime"] = pd.Categorical(frame["regime"], categories=list(REGIMES))
    frame["weight"] = frame["weight"].astype("float64")
    frame["label"] = frame["label"].astype("Int8")
    frame["event"] = frame["event"].astype("category")
    return frame


def _constant_weights(
    conn: sqlite3.Connection, sources: tuple[Source, ...]
) -> dict[tuple[str, str], float] | None:
    """The weight of each (source, regime) when all its samples share one, else None.

    Regime loss weights normally are such constants, and then `read_samples` need not move a
    million floats through SQL text. Two index seeks per pair (min and max on the covering
    index samples_by_regime), so the check costs milliseconds.
    """
    table: dict[tuple[str, str], float] = {}
    for source in sources:
        for regime in REGIMES:
            key = (source, regime)
            low = conn.execute(
                "SELECT min(weight) FROM samples WHERE source = ? AND regime = ?", key
            ).fetchone()[0]
            high = conn.execute(
                "SELECT max(weight) FROM samples WHERE source = ? AND regime = ?", key
            ).fetchone()[0]
            if low != high:
                return None
            if low is not None:
                table[key] = float(low)
    return table


def _samples_query(
    source: Source,
    labelled: bool | None,
    feature_version: int | None,
    check_versions: bool,
    read_weights: bool,
) -> tuple[str, dict[str, Any]]:
    """The aggregate query of `read_samples` for one source: a row per symbol.

    Each column is concatenated inside SQLite, so a million samples cost a thousand Python
    rows, not a million (docs/benchmarks.md). All the aggregates of a group see its rows in
    the same order, so the columns stay aligned.
    """
    where = ["source = :source"]
    params: dict[str, Any] = {"source": source, "sep": _FIELD_SEP}
    if labelled is not None:
        where.append("label IS NOT NULL" if labelled else "label IS NULL")
    if feature_version is not None:
        where.append("feature_version = :version")
        params["version"] = feature_version
    versions = "min(feature_version), max(feature_version)" if check_versions else "NULL, NULL"
    # 21 significant digits: SQLite 3.40 prints some doubles wrongly at 17 (e.g. 1.2e266).
    weights = "group_concat(printf('%!.20e', weight), ',')" if read_weights else "NULL"
    # Live samples have no event (a CHECK constraint), so their query skips the column.
    events = "group_concat(coalesce(event, ''), :sep)" if source == "archive" else "NULL"
    sql = f"""
        SELECT source, symbol, count(*), {versions},
            CAST(group_concat(features, '') AS BLOB), group_concat(ts, ''),
            group_concat({_REGIME_CODE}, ''), group_concat(coalesce(label, '-'), ''),
            {weights}, {events}
        FROM samples WHERE {" AND ".join(where)} GROUP BY symbol ORDER BY symbol
    """  # noqa: S608 (fixed fragments; every value is a bound parameter)
    return sql, params


def _decode_groups(
    path: str,
    groups: list[tuple[Any, ...]],
    n_features: int,
    labelled_only: bool,
    weight_table: Mapping[tuple[str, str], float] | None,
) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
    """Turn the per-(source, symbol) aggregates of `read_samples` into (meta, X)."""
    counts = np.array([g[2] for g in groups], dtype=np.int64)
    total = int(counts.sum())
    blob = bytearray().join(g[5] for g in groups)
    ts_text = "".join(g[6] for g in groups).encode("ascii")
    regime_codes = np.frombuffer("".join(g[7] for g in groups).encode("ascii"), dtype=np.uint8)
    label_chars = np.frombuffer("".join(g[8] for g in groups).encode("ascii"), dtype=np.uint8)
    if (
        len(blob) != total * n_features * 4
        or len(ts_text) != total * 10
        or len(regime_codes) != total
        or len(label_chars) != total
    ):
        raise StoreError(
            f"{path}: samples do not decode: {total} rows, {len(blob)} feature bytes for "
            f"{n_features} float32 features each; run PRAGMA integrity_check"
        )
    matrix = np.frombuffer(blob, dtype=np.float32).reshape(total, n_features)
    regime_codes = (regime_codes - ord("0")).astype(np.int8)
    if total and regime_codes.max() >= len(REGIMES):
        raise StoreError(f"{path}: a sample has a regime outside {', '.join(REGIMES)}")
    source_codes = np.repeat(np.array([SOURCES.index(g[0]) for g in groups], dtype=np.int8), counts)

    if weight_table is None:
        text = ",".join(g[9] for g in groups)
        weights = np.array(text.split(","), dtype=np.float64) if total else np.empty(0)
    else:
        lookup = np.full((len(SOURCES), len(REGIMES)), np.nan)
        for (source, regime), weight in weight_table.items():
            lookup[SOURCES.index(source), REGIMES.index(regime)] = weight
        weights = lookup[source_codes, regime_codes]

    missing = label_chars == ord("-")
    label_values = np.where(missing, 0, label_chars.astype(np.int16) - ord("0")).astype(np.int8)
    labels: Any = label_values if labelled_only else pd.arrays.IntegerArray(label_values, missing)

    symbols = sorted({g[1] for g in groups})
    symbol_code = {s: i for i, s in enumerate(symbols)}
    symbol_codes = np.repeat(np.array([symbol_code[g[1]] for g in groups], dtype=np.int32), counts)

    event_codes = np.full(total, -1, dtype=np.int32)
    event_names: list[str] = []
    archive_text = [g[10] for g in groups if g[0] == "archive"]
    if archive_text:
        codes, uniques = pd.factorize(
            np.array(_FIELD_SEP.join(archive_text).split(_FIELD_SEP), dtype=object)
        )
        names = list(uniques)
        if "" in names:  # a NULL event: make it missing, not a category
            blank = names.index("")
            codes = np.where(codes == blank, -1, codes - (codes > blank))
            names.remove("")
        event_codes[source_codes == SOURCES.index("archive")] = codes
        event_names = names

    meta = pd.DataFrame(
        {
            "symbol": pd.Categorical.from_codes(symbol_codes, categories=pd.Index(symbols)),
            "ts": np.frombuffer(ts_text, dtype="S10")
            .astype("datetime64[D]")
            .astype("datetime64[ns]"),
            "source": pd.Categorical.from_codes(source_codes, categories=pd.Index(SOURCES)),
            "regime": pd.Categorical.from_codes(regime_codes, categories=pd.Index(REGIMES)),
            "weight": weights,
            "label": labels,
            "event": pd.Categorical.from_codes(event_codes, categories=pd.Index(event_names)),
        }
    )
    return meta, matrix
