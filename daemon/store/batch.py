"""The batch write of the store: one consumer batch (bars, samples, labels, predictions,
offsets, counters, dead letters) in one transaction (`Store.write_batch`): SQLite's
`BEGIN IMMEDIATE`, or one PostgreSQL transaction. The statements the engines spell differently
come from the store's `Dialect`."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.domain import (
    BAR_FIELDS,
    BarRow,
    DeadLetterRow,
    LabelUpdate,
    OutboxRow,
    PredictionRow,
    RowBlock,
    SampleRow,
    check_text,
)
from daemon.errors import StoreError
from daemon.store.connected import Connected, SqlConnection, StagingConnection
from daemon.store.dialect import Dialect

__all__ = ["BatchResult", "BatchWrites"]

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
    outbox_written: int = 0


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
_OUTBOX_INSERT = "INSERT INTO outbox (topic, key, value) VALUES (?, ?, ?)"
_COUNTER_ADD = """
INSERT INTO counters (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value
"""


class BatchWrites(Connected):
    """`Store.write_batch`: the store's one write path for consumer batches."""

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
        outbox: Iterable[OutboxRow] = (),
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
        with the offsets that pass them. `outbox` rows are records for the output topics,
        stored in this transaction and published afterwards (`daemon.store.outbox`).
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

        outbox_rows = outbox if isinstance(outbox, list) else list(outbox)
        rebuilt = sorted(set(replace_events))
        sql = self.dialect
        with self._transaction("write a batch", write=True) as conn:
            _register_feature_sets(conn, feature_sizes)
            samples_removed = _remove_unselected(conn, rebuilt, sample_params) if rebuilt else 0
            bars_inserted, bars_corrected = _upsert(
                conn, sql, "bars", sql.bar_insert, sql.bar_correct, bar_params, _KEY2
            )
            samples_inserted, samples_replaced = _upsert(
                conn, sql, "samples", sql.sample_insert, sql.sample_replace, sample_params, _KEY3
            )
            predictions_written = 0
            if prediction_params:
                predictions_written = conn.executemany(
                    _PREDICTION_UPSERT, prediction_params
                ).rowcount
            labels_set = labels_missing = 0
            if label_params:
                labels_set = conn.executemany(sql.label_set, label_params).rowcount
                if labels_set < len(label_params):
                    labels_missing = _missing_samples(conn, label_params)
                if conn.execute("SELECT 1 FROM predictions LIMIT 1").fetchone():
                    conn.executemany(
                        sql.prediction_label_set,
                        [(symbol, ts, label) for source, symbol, ts, label in label_params
                         if source == "live"],
                    )  # fmt: skip
            if offset_params:
                conn.executemany(_OFFSET_UPSERT, offset_params)
            conn.executemany(sql.dead_letter_insert, dead_letters)
            if outbox_rows:
                conn.executemany(_OUTBOX_INSERT, outbox_rows)
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
            outbox_written=len(outbox_rows),
        )


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


def _register_feature_sets(conn: SqlConnection, sizes: Mapping[int, tuple[int, SampleRow]]) -> None:
    """Record new feature versions; reject a sample whose length disagrees with its version.

    A version another daemon of a shared store records at the same moment is taken as it
    committed it (the insert yields to it, the read after it sees it)."""
    select = "SELECT n_features FROM feature_sets WHERE version = ?"
    for version, (n, sample) in sizes.items():
        row = conn.execute(select, (version,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO feature_sets (version, n_features) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (version, n),
            )
            row = conn.execute(select, (version,)).fetchone()
        if int(row[0]) != n:
            raise StoreError(
                f"feature_version {version} has {row[0]} features in the store, but sample "
                f"{sample.symbol} {sample.ts} {sample.source} has {n}"
            )


def _upsert(
    conn: SqlConnection,
    dialect: Dialect,
    table: str,
    insert: str,
    update: str,
    params: list[tuple[Any, ...]],
    key: Callable[[tuple[Any, ...]], tuple[Any, ...]],
) -> tuple[int, int]:
    """Insert the rows that are new, then rewrite the stored rows whose values differ; returns
    (inserted, changed). When every row went in, nothing can differ and the update is skipped:
    the live stream's case, which halves the statements of a batch.

    With `Dialect.staged_upserts` the rows go to the staging table of `table` first and the two
    statements read them from there; of rows sharing a key only the last is staged, with the
    values the row-by-row upsert leaves stored (`_last_rows`)."""
    if not params:
        return 0, 0
    if dialect.staged_upserts:
        assert isinstance(conn, StagingConnection)
        conn.stage(table, _last_rows(params, key, label_at=5 if table == "samples" else None))
        inserted = conn.execute(insert).rowcount
        if inserted == len(params):
            return inserted, 0
        return inserted, conn.execute(update).rowcount
    inserted = conn.executemany(insert, params).rowcount
    if inserted == len(params):
        return inserted, 0
    return inserted, conn.executemany(update, params).rowcount


def _last_rows(
    params: list[tuple[Any, ...]],
    key: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    label_at: int | None,
) -> list[tuple[Any, ...]]:
    """The last row of each key, as applying the rows in turn would leave it: a row whose
    label (at `label_at`) is None keeps the last known label of an earlier row of its key."""
    last: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in params:
        k = key(row)
        earlier = last.get(k)
        if label_at is not None and earlier is not None and row[label_at] is None:
            row = (*row[:label_at], earlier[label_at], *row[label_at + 1 :])
        last[k] = row
    return list(last.values())


def _remove_unselected(
    conn: SqlConnection, events: list[str], sample_params: list[tuple[Any, ...]]
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


def _missing_samples(conn: SqlConnection, keys: Sequence[tuple[str, str, str, int]]) -> int:
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
