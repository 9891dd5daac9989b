from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from daemon.config import StoreConfig
from daemon.domain import REGIMES, BarRow, LabelUpdate, PredictionRow, SampleRow
from daemon.errors import ConfigError, RegimedError, StoreError
from daemon.registry.versions import Registry
from daemon.store import batch as store_module
from daemon.store import migrations as _migrations
from daemon.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from daemon.store.sqlite import SYNCHRONOUS, BatchResult, Store

UTC = dt.UTC


@pytest.fixture(autouse=True)
def opened():
    """Every store a test opens, closed at teardown even when the test fails."""
    stores: list[Store] = []
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "regimed.db"


@pytest.fixture
def open_store(db_path, opened):
    def _open(path=None, **kwargs):
        s = Store(path or db_path, **kwargs)
        opened.append(s)
        return s

    return _open


@pytest.fixture
def store(backend_store):
    return backend_store


def bar(symbol="SPY", ts="2020-01-02", close=100.0, **changes):
    values = dict(
        symbol=symbol, ts=ts, open=close - 1, high=close + 1, low=close - 2, close=close,
        volume=1e6, regime="normal", vix=18.0, vix_source="vix",
    )  # fmt: skip
    values.update(changes)
    return BarRow(**values)


def sample(symbol="SPY", ts="2020-01-02", source="live", label=None, features=(1.0, 2.0, 3.0),
           version=1, regime="normal", weight=1.0, event=None):  # fmt: skip
    return SampleRow(
        symbol, ts, source, regime, weight, label, np.asarray(features), version, event
    )


def day(i: int) -> str:
    return (dt.date(2020, 1, 1) + dt.timedelta(days=i)).isoformat()


def raw(path):
    """A plain sqlite3 connection, to look at the file the way another tool would."""
    return sqlite3.connect(path)


# -- opening, pragmas and migrations -----------------------------------------------------------


@pytest.fixture
def sqlite_store(open_store):
    """The SQLite store, for what only SQLite has (a file, WAL, PRAGMAs)."""
    return open_store()


def in_transaction(store) -> bool:
    """Whether the store's connection is inside a transaction (either backend)."""
    if store.dialect.name == "sqlite":
        return bool(store._conn.in_transaction)
    return store._pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


def test_fresh_database_gets_wal_full_sync_and_the_newest_schema(sqlite_store, db_path):
    store = sqlite_store
    conn = raw(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in MIGRATIONS]
    assert all(dt.datetime.fromisoformat(a).utcoffset() == dt.timedelta(0) for _, _, a in rows)
    assert {"bars", "samples", "feature_sets", "kafka_offsets", "counters", "models",
            "retrain_runs", "predictions", "schema_migrations"} <= tables  # fmt: skip
    assert store.schema_version() == LATEST_VERSION >= 2
    assert SYNCHRONOUS == "FULL"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_open_takes_path_and_busy_timeout_from_the_config(tmp_path, opened):
    config = StoreConfig(path=str(tmp_path / "from-config.db"), busy_timeout_ms=1234)
    s = Store.open(config)
    opened.append(s)
    assert s.path == config.path
    assert s._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert (tmp_path / "from-config.db").exists()


def test_a_write_waits_for_the_busy_timeout_then_names_it(open_store, db_path):
    store = open_store(busy_timeout_ms=50)
    other = raw(db_path)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(StoreError, match=r"database is locked .*busy_timeout_ms=50"):
            store.write_batch(offsets={("market.bars", 0): 1})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.write_batch(offsets={("market.bars", 0): 1}).offsets_written == 1


def test_a_negative_busy_timeout_is_refused(db_path):
    with pytest.raises(StoreError, match="busy_timeout_ms = -1: expected an integer >= 0"):
        Store(db_path, busy_timeout_ms=-1)


def test_reopening_applies_nothing_twice(open_store, db_path):
    open_store().close()
    open_store().close()
    conn = raw(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(
            MIGRATIONS
        )
    finally:
        conn.close()


def _fill_version(path: Path, version: int) -> None:
    """Data written with the schema of `version` (only the tables that version has)."""
    if version == 0:
        return
    conn = raw(path)
    with conn:
        conn.execute(
            "INSERT INTO bars VALUES ('SPY', '2020-01-02', 1, 2, 0.5, 1.5, 100, 'crash', 45, 'vix')"
        )
        conn.execute("INSERT INTO feature_sets VALUES (7, 2)")
        conn.execute(
            "INSERT INTO samples VALUES ('archive', 'SPY', '2020-01-02', 'crash', 2.0, 1, "
            "'2020 COVID Crash', 7, ?)",
            (np.array([0.5, -1.25], dtype="<f4").tobytes(),),
        )
        conn.execute("INSERT INTO kafka_offsets VALUES ('market.bars', 3, 42)")
        conn.execute("INSERT INTO counters VALUES ('rejected_events', 5)")
    conn.close()


@pytest.mark.parametrize("version", range(LATEST_VERSION))
def test_every_older_schema_upgrades_to_the_newest_with_its_data(db_path, open_store, version):
    db = Database(db_path)
    try:
        applied = migrate(db, target=version)
    finally:
        db.close()
    assert [m.version for m in applied] == list(range(1, version + 1))
    _fill_version(db_path, version)

    s = open_store()

    assert s.schema_version() == LATEST_VERSION
    conn = raw(db_path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()
    assert names == [m.name for m in MIGRATIONS]
    assert {"samples_pending", "samples_by_regime", "models_one_champion"} <= indexes
    if version:
        bars = s.bars()
        assert bars[["symbol", "close", "regime", "vix"]].values.tolist() == [
            ["SPY", 1.5, "crash", 45.0]
        ]
        meta, X = s.read_samples(target="direction:h=5:threshold=0")  # the only target then
        assert meta["event"].tolist() == ["2020 COVID Crash"]
        assert X.tolist() == [[0.5, -1.25]]
        assert s.offsets("market.bars") == {3: 42}
        assert s.counter("rejected_events") == 5


def test_a_newer_schema_is_refused(db_path, open_store):
    open_store().close()
    conn = raw(db_path)
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from_the_future', 'x')")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 99 .* newer than this regimed"):
        open_store()


def test_a_schema_with_foreign_migration_names_is_refused(db_path, open_store):
    open_store().close()
    conn = raw(db_path)
    with conn:
        conn.execute("UPDATE schema_migrations SET name = 'something_else' WHERE version = 1")
    conn.close()
    with pytest.raises(StoreError, match=r"named 'something_else', expected .*'core_tables'"):
        open_store()


def test_a_failing_migration_leaves_the_previous_version_intact(db_path, open_store, monkeypatch):
    open_store().close()
    broken = Migration(
        LATEST_VERSION + 1,
        "broken",
        ("CREATE TABLE half_done (x INTEGER)", "CREATE TABLE bars (x INTEGER)"),
    )
    monkeypatch.setattr(_migrations, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(_migrations, "LATEST_VERSION", LATEST_VERSION + 1)
    with pytest.raises(StoreError, match="table bars already exists"):
        open_store()
    conn = raw(db_path)
    try:
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        half = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchone()
    finally:
        conn.close()
    assert version == LATEST_VERSION
    assert half is None


def test_a_file_that_is_not_a_database_names_the_file(tmp_path, open_store):
    path = tmp_path / "notes.txt"
    text = b"this is not a database, but it is long enough to look like one" * 20
    path.write_bytes(text)
    with pytest.raises(StoreError, match=r"notes\.txt: not an SQLite database") as info:
        open_store(path)
    assert isinstance(info.value, RegimedError)
    assert isinstance(info.value, ConfigError)  # exit 2: store.path names the wrong file
    assert path.read_bytes() == text


def test_read_only_store_reads_and_refuses_writes(open_store, db_path):
    writer = open_store()
    writer.write_batch(bars=[bar()], offsets={("market.bars", 0): 1})
    reader = open_store(read_only=True)
    assert reader.bar_count() == 1
    assert reader.offsets("market.bars") == {0: 1}
    with pytest.raises(StoreError, match="opened read-only; cannot write a batch"):
        reader.write_batch(bars=[bar(ts="2020-01-03")])


def test_read_only_store_refuses_an_unmigrated_file(tmp_path, open_store):
    path = tmp_path / "empty.db"
    raw(path).close()
    with pytest.raises(StoreError, match="schema version 0, expected"):
        open_store(path, read_only=True)


def test_a_closed_store_says_so(store):
    store.close()
    store.close()
    with pytest.raises(StoreError, match="the store is closed; cannot read offsets"):
        store.offsets("market.bars")


def test_context_manager_closes(db_path):
    with Store(db_path) as s:
        s.write_batch(bars=[bar()])
    with pytest.raises(StoreError, match="closed"):
        s.bar_count()


# -- write_batch -------------------------------------------------------------------------------


def test_writing_the_same_bars_and_samples_twice_changes_nothing(store):
    batch = dict(
        bars=[bar(ts=day(0)), bar(ts=day(1), vix=None, vix_source="proxy", regime=None)],
        samples=[sample(ts=day(0), label=1), sample(ts=day(1))],
    )
    first = store.write_batch(**batch)
    second = store.write_batch(**batch)
    assert (first.bars_inserted, first.samples_inserted) == (2, 2)
    assert second == BatchResult(bars_unchanged=2, samples_unchanged=2)
    assert store.bar_count() == 2
    assert store.counter("bars_corrected") == 0
    assert store.read_samples(labelled=None)[1].shape == (2, 3)


def test_a_corrected_bar_replaces_the_old_one_and_is_counted(store):
    store.write_batch(bars=[bar(close=100.0), bar(ts=day(9))])
    result = store.write_batch(bars=[bar(close=101.5), bar(ts=day(9), vix=None)])
    assert (result.bars_corrected, result.bars_inserted, result.bars_unchanged) == (2, 0, 0)
    assert store.counter("bars_corrected") == 2
    frame = store.bars()
    assert frame["close"].tolist() == [101.5, 100.0]
    assert np.isnan(frame["vix"].iloc[1])
    assert store.bar_count() == 2


def test_rows_repeated_within_one_batch_leave_the_last_one_stored(store):
    """Both backends store the last of a key's rows in a batch (SQLite applies them in turn,
    PostgreSQL stages only the last); the counts of such a batch may differ between them."""
    store.write_batch(
        bars=[bar(close=100.0), bar(close=101.0), bar(ts=day(3))],
        samples=[sample(label=1), sample(label=None, features=(5.0, 6.0, 7.0))],
    )
    assert store.bars()["close"].tolist() == [101.0, 100.0]
    meta, X = store.read_samples(labelled=None)
    assert meta["label"].tolist() == [1]
    assert X.tolist() == [[5.0, 6.0, 7.0]]


def test_a_changed_sample_replaces_the_old_one_but_a_pending_replay_keeps_the_label(store):
    store.write_batch(samples=[sample(label=1)])
    replay = store.write_batch(samples=[sample(label=None)])
    assert replay == BatchResult(samples_unchanged=1)
    changed = store.write_batch(samples=[sample(label=None, features=(9.0, 9.0, 9.0))])
    assert changed.samples_replaced == 1
    meta, X = store.read_samples()
    assert meta["label"].tolist() == [1]
    assert X.tolist() == [[9.0, 9.0, 9.0]]


def test_write_batch_stores_every_part(store):
    result = store.write_batch(
        bars=[bar()],
        samples=[sample()],
        predictions=[PredictionRow("SPY", "2020-01-02", "v1", 0.7, 1, "normal")],
        offsets={("market.bars", 0): 11, ("market.bars", 1): 7},
        counters={"rejected_events": 3},
    )
    assert result == BatchResult(
        bars_inserted=1, samples_inserted=1, predictions_written=1, offsets_written=2
    )
    assert store.offsets("market.bars") == {0: 11, 1: 7}
    assert store.counters() == {"rejected_events": 3}
    assert store.write_batch() == BatchResult()


@pytest.mark.parametrize("broken", ["_OFFSET_UPSERT", "_COUNTER_ADD", "_PREDICTION_UPSERT"])
def test_write_batch_is_all_or_nothing(store, monkeypatch, broken):
    store.write_batch(bars=[bar(ts=day(0))], offsets={("market.bars", 0): 1})
    monkeypatch.setattr(store_module, broken, "INSERT INTO no_such_table VALUES (?)")
    # SQLite finds no table; psycopg counts placeholders before it sends the statement.
    with pytest.raises(StoreError, match=r"cannot write a batch: (no such table|the query has)"):
        store.write_batch(
            bars=[bar(ts=day(1)), bar(ts=day(0), close=50.0)],
            samples=[sample(ts=day(1))],
            labels=[LabelUpdate("SPY", day(1), "live", 1)],
            predictions=[PredictionRow("SPY", day(1), "v1", 0.5, 1)],
            offsets={("market.bars", 0): 2},
            counters={"rejected_events": 1},
        )
    monkeypatch.undo()
    assert store.bars()["close"].tolist() == [100.0]
    assert store.offsets("market.bars") == {0: 1}
    assert store.counters() == {}
    assert store.read_samples(labelled=None)[1].shape == (0, 0)
    assert store.write_batch(bars=[bar(ts=day(1))]).bars_inserted == 1


def test_an_exception_from_python_mid_batch_rolls_back_too(store, monkeypatch):
    def explode(*args):
        raise KeyboardInterrupt

    store.write_batch(offsets={("market.bars", 0): 1})
    monkeypatch.setattr(store_module, "_register_feature_sets", explode)
    with pytest.raises(KeyboardInterrupt):
        store.write_batch(samples=[sample()], offsets={("market.bars", 0): 2})
    monkeypatch.undo()
    assert store.offsets("market.bars") == {0: 1}
    assert not in_transaction(store)


def test_offsets_are_stored_exactly_as_given(store):
    store.write_batch(offsets={("market.bars", 0): 100, ("other", 0): 5})
    store.write_batch(offsets={("market.bars", 0): 90})  # the consumer decides, not the store
    assert store.offsets("market.bars") == {0: 90}
    assert store.offsets("other") == {0: 5}
    assert store.offsets("unknown") == {}


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ({("market.bars", -1): 3}, r"partition = -1: expected an integer >= 0"),
        ({("market.bars", 0): -3}, r"next_offset = -3: expected an integer >= 0"),
        ({("market.bars", 0): True}, r"next_offset = True"),
        ({("", 0): 1}, r"offsets.topic = ''"),
    ],
)
def test_bad_offsets_are_refused_by_name(store, offsets, message):
    with pytest.raises(StoreError, match=message):
        store.write_batch(offsets=offsets)


def test_counters_add_up_and_refuse_negative_increments(store):
    store.write_batch(counters={"rejected_events": 2})
    store.write_batch(counters={"rejected_events": 3, "other": 0})
    assert store.counter("rejected_events") == 5
    assert store.counter("never") == 0
    with pytest.raises(StoreError, match=r"counters\['rejected_events'\] = -1"):
        store.write_batch(counters={"rejected_events": -1})


def test_labels_fill_pending_samples_and_their_predictions(store):
    store.write_batch(
        samples=[sample(ts=day(0)), sample(ts=day(1)), sample("QQQ", day(0))],
        predictions=[PredictionRow("SPY", day(0), "v1", 0.8, 1, "normal")],
    )
    pending = store.pending_samples()
    assert list(zip(pending["symbol"], pending["ts"].dt.strftime("%Y-%m-%d"), strict=True)) == [
        ("QQQ", day(0)), ("SPY", day(0)), ("SPY", day(1)),
    ]  # fmt: skip
    assert pending["label"].isna().all()

    result = store.write_batch(
        labels=[
            LabelUpdate("SPY", day(0), "live", 1),
            LabelUpdate("QQQ", day(0), "live", 0),
            LabelUpdate("SPY", day(5), "live", 1),
        ]
    )
    assert (result.labels_set, result.labels_missing) == (2, 1)
    assert store.pending_samples()["ts"].dt.strftime("%Y-%m-%d").tolist() == [day(1)]
    meta, _ = store.read_samples(labelled=True)
    assert dict(zip(meta["symbol"], meta["label"], strict=True)) == {"QQQ": 0, "SPY": 1}
    with store.transaction("read", write=False) as conn:
        assert conn.execute("SELECT label FROM predictions").fetchall() == [(1,)]
    again = store.write_batch(labels=[LabelUpdate("SPY", day(0), "live", 1)])
    assert (again.labels_set, again.labels_missing) == (0, 0)


# -- reading samples -----------------------------------------------------------------------


def test_read_samples_round_trips_float32_features_bit_for_bit(store):
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4028235e38, -1.1754944e-38, 1 / 3],
        dtype=np.float32,
    )
    rng = np.random.default_rng(7)
    rows = np.vstack([special, rng.standard_normal((40, special.size)).astype(np.float32)])
    store.write_batch(
        samples=[sample(ts=day(i), label=i % 2, features=row) for i, row in enumerate(rows)]
    )
    _, X = store.read_samples()
    assert X.dtype == np.float32
    assert X.shape == rows.shape
    assert np.array_equal(X.view(np.uint32), rows.view(np.uint32))
    X[0, 0] = 5.0  # the caller owns the matrix


def test_read_samples_meta_columns_and_order(store):
    store.write_batch(
        samples=[
            sample("SPY", day(1), label=1, regime="crash", weight=2.0),
            sample("QQQ", day(0), label=0, regime="recovery", weight=1.5),
            sample("SPY", day(0), "archive", label=1, regime="crash", weight=2.0,
                   event="2008 Financial Crisis"),
            sample("AAA", day(3), "archive", label=0, regime="normal", weight=1.0),
        ]
    )  # fmt: skip
    meta, X = store.read_samples()
    assert list(meta.columns) == ["symbol", "ts", "source", "regime", "weight", "label", "event"]
    assert meta[["symbol", "source", "regime", "weight", "label"]].values.tolist() == [
        ["AAA", "archive", "normal", 1.0, 0],
        ["SPY", "archive", "crash", 2.0, 1],
        ["QQQ", "live", "recovery", 1.5, 0],
        ["SPY", "live", "crash", 2.0, 1],
    ]
    assert meta["ts"].dt.strftime("%Y-%m-%d").tolist() == [day(3), day(0), day(0), day(1)]
    assert [None if pd.isna(e) else e for e in meta["event"]] == [
        None, "2008 Financial Crisis", None, None,
    ]  # fmt: skip
    assert list(meta["event"].cat.categories) == ["2008 Financial Crisis"]
    assert meta["ts"].dtype == "datetime64[ns]"
    assert meta["label"].dtype == np.int8
    assert list(meta["regime"].cat.categories) == list(REGIMES)
    assert X.shape == (4, 3)


@pytest.mark.parametrize("weights", ["per regime", "per sample"])
def test_weights_round_trip_exactly(store, weights):
    values = [1 / 3, 2 / 3, 0.1 + 0.2, 5e-324, 1.2055174642695672e266, 1.7976931348623157e308]
    rows = [
        sample(ts=day(i), label=1, regime="normal",
               weight=values[i] if weights == "per sample" else 1 / 3)
        for i in range(len(values))
    ]  # fmt: skip
    store.write_batch(samples=rows)
    meta, _ = store.read_samples()
    assert meta["weight"].tolist() == [r.weight for r in rows]


def test_read_samples_filters_by_source_label_and_version(store):
    store.write_batch(
        samples=[
            sample(ts=day(0), label=1),
            sample(ts=day(1)),
            sample(ts=day(2), source="archive", label=0),
            sample(ts=day(3), label=1, version=2, features=(1.0, 2.0)),
        ]
    )
    assert len(store.read_samples(source="live", labelled=None, feature_version=1)[0]) == 2
    assert len(store.read_samples(source="archive", feature_version=1)[0]) == 1
    pending, X = store.read_samples(labelled=False)
    assert pending["label"].isna().tolist() == [True]
    assert str(pending["label"].dtype) == "Int8"
    assert X.shape == (1, 3)
    meta, X = store.read_samples(feature_version=2)
    assert (len(meta), X.shape) == (1, (1, 2))
    assert store.read_samples(feature_version=3)[1].shape == (0, 0)


def test_mixed_feature_versions_fail_with_a_clear_error(store):
    store.write_batch(samples=[sample(ts=day(0), label=1, features=(1.0, 2.0, 3.0), version=1)])
    store.write_batch(
        samples=[sample(ts=day(1), label=1, features=(1.0, 2.0, 3.0, 4.0), version=2)]
    )
    with pytest.raises(StoreError, match=r"mix feature versions \[1, 2\]; pass feature_version="):
        store.read_samples()
    assert store.read_samples(feature_version=2)[1].tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_a_feature_vector_must_match_the_length_of_its_version(store):
    store.write_batch(samples=[sample(ts=day(0), features=(1.0, 2.0, 3.0))])
    with pytest.raises(StoreError, match=r"feature_version 1 has 3 features in the store, but "
                       r"sample SPY 2020-01-02 live has 2"):  # fmt: skip
        store.write_batch(bars=[bar(ts=day(1))], samples=[sample(ts=day(1), features=(1.0, 2.0))])
    assert store.bar_count() == 0
    with pytest.raises(StoreError, match="feature_version 1: sample SPY 2020-01-03 live has 2"):
        store.write_batch(samples=[sample(ts=day(1)), sample(ts=day(2), features=(1.0, 2.0))])


def test_sample_counts_cover_every_source_and_regime(store):
    assert store.sample_counts() == {s: dict.fromkeys(REGIMES, 0) for s in ("live", "archive")}
    store.write_batch(
        samples=[
            sample(ts=day(0), regime="crash"),
            sample(ts=day(1), regime="crash", label=1),
            sample(ts=day(2), source="archive", regime="recovery"),
        ]
    )
    counts = store.sample_counts()
    assert counts["live"]["crash"] == 2
    assert counts["archive"]["recovery"] == 1
    assert sum(counts["live"].values()) + sum(counts["archive"].values()) == 3
    assert json.loads(json.dumps(counts)) == counts


samples_strategy = st.lists(
    st.tuples(
        st.sampled_from(["SPY", "QQQ", "^VIX", "BRK.B"]),
        st.integers(0, 60),
        st.sampled_from(["live", "archive"]),
        st.sampled_from(REGIMES),
        st.floats(0, 10, allow_nan=False),
        st.sampled_from([None, 0, 1]),
        st.lists(st.floats(width=32), min_size=4, max_size=4),
        st.sampled_from([None, "2008 Financial Crisis", "2018 Volmageddon"]),
    ),
    unique_by=lambda t: (t[0], t[1], t[2]),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(rows=samples_strategy)
def test_read_samples_round_trips_any_samples(rows):
    written = [
        SampleRow(symbol, day(d), source, regime, weight, label,
                  np.array(f, dtype=np.float32), 1, event if source == "archive" else None)
        for symbol, d, source, regime, weight, label, f, event in rows
    ]  # fmt: skip
    with Store(":memory:") as s:
        s.write_batch(samples=written)
        meta, X = s.read_samples(labelled=None)
    expected = sorted(written, key=lambda r: (r.source, r.symbol, r.ts))
    assert len(meta) == len(expected)
    assert meta["symbol"].tolist() == [r.symbol for r in expected]
    assert meta["ts"].dt.strftime("%Y-%m-%d").tolist() == [r.ts for r in expected]
    assert meta["source"].tolist() == [r.source for r in expected]
    assert meta["regime"].tolist() == [r.regime for r in expected]
    assert meta["weight"].tolist() == [r.weight for r in expected]
    assert [None if pd.isna(x) else int(x) for x in meta["label"]] == [r.label for r in expected]
    assert [None if pd.isna(x) else x for x in meta["event"]] == [r.event for r in expected]
    if expected:
        wanted = np.vstack([r.features for r in expected])
        assert np.array_equal(X.view(np.uint32), wanted.view(np.uint32))


# -- reading bars ------------------------------------------------------------------------------


def test_bars_come_in_symbol_then_day_order_and_filter(store):
    store.write_batch(bars=[bar("QQQ", day(1)), bar("SPY", day(2)), bar("QQQ", day(0))])
    frame = store.bars()
    assert list(frame.columns) == [
        "symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix", "vix_source",
    ]  # fmt: skip
    assert list(zip(frame["symbol"], frame["ts"].dt.strftime("%Y-%m-%d"), strict=True)) == [
        ("QQQ", day(0)), ("QQQ", day(1)), ("SPY", day(2)),
    ]  # fmt: skip
    assert store.bars(symbol="QQQ", since=dt.date(2020, 1, 2))["ts"].tolist() == [
        pd.Timestamp(day(1))
    ]
    assert len(store.bars(symbol="NONE")) == 0
    with pytest.raises(StoreError, match=r"bars\(since\).ts = '2020-1-2'"):
        store.bars(since="2020-1-2")


def test_last_bars_gives_the_latest_n_of_every_symbol(store):
    store.write_batch(
        bars=[bar("SPY", day(i), close=100.0 + i) for i in range(10)]
        + [bar("QQQ", day(i)) for i in range(2)]
        + [bar("^VIX", day(i), vix=None, vix_source="none", regime=None) for i in range(5)]
    )
    frame = store.last_bars(3)
    got = collections.defaultdict(list)
    for symbol, ts in zip(frame["symbol"], frame["ts"].dt.strftime("%Y-%m-%d"), strict=True):
        got[symbol].append(ts)
    assert list(got) == ["QQQ", "SPY", "^VIX"]
    assert got == {"QQQ": [day(0), day(1)], "SPY": [day(7), day(8), day(9)],
                   "^VIX": [day(2), day(3), day(4)]}  # fmt: skip
    assert frame.loc[frame["symbol"] == "SPY", "close"].tolist() == [107.0, 108.0, 109.0]
    assert store.last_bars(1)["symbol"].tolist() == ["QQQ", "SPY", "^VIX"]
    with Store(":memory:") as empty:
        assert len(empty.last_bars(5)) == 0
    with pytest.raises(StoreError, match=r"last_bars\(n_per_symbol=0\)"):
        store.last_bars(0)


# -- rows are checked on the way in --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: bar(ts="2020-02-30"), r"BarRow.ts = '2020-02-30': expected a date"),
        (lambda: bar(ts="20200102"), r"BarRow.ts = '20200102'"),
        (lambda: bar(volume=float("nan")), r"BarRow.volume = nan: expected a finite number"),
        (lambda: bar(vix=float("inf")), r"BarRow.vix = inf: expected a finite number"),
        (lambda: bar(regime="panic"), r"BarRow.regime = 'panic': expected one of"),
        (lambda: bar(vix_source="guess"), r"BarRow.vix_source = 'guess'"),
        (lambda: bar(symbol=""), r"BarRow.symbol = ''"),
        (lambda: sample(source="demo"), r"SampleRow.source = 'demo'"),
        (lambda: sample(label=2), r"SampleRow.label = 2: expected 0, 1 or None"),
        (lambda: sample(weight=-1.0), r"SampleRow.weight = -1.0: expected a finite number >= 0"),
        (lambda: sample(features=()), r"SampleRow.features has shape \(0,\)"),
        (lambda: sample(features=[[1.0]]), r"SampleRow.features has shape \(1, 1\)"),
        (lambda: sample(event="2008 Financial Crisis"), r"SampleRow.event .* on a live sample"),
        (lambda: LabelUpdate("SPY", day(0), "live", None), r"LabelUpdate.label = None"),
        (lambda: PredictionRow("SPY", day(0), "", 0.5, 1), r"PredictionRow.model_version = ''"),
    ],
)
def test_bad_rows_are_refused_naming_the_field(make, message):
    with pytest.raises(StoreError, match=message):
        make()


def test_sample_features_are_a_private_read_only_copy():
    source = np.array([1.0, 2.0], dtype=np.float32)
    row = sample(features=source)
    source[0] = 9.0
    assert row.features.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="read-only"):
        row.features[0] = 3.0


# -- model registry and retrain runs -------------------------------------------------------


def test_model_registry_keeps_one_champion(store):
    registry = Registry(store)
    t0 = dt.datetime(2024, 1, 6, 21, tzinfo=UTC)
    assert registry.champion() is None
    first = registry.add_model("v1", trained_at=t0, sha256="a" * 64, path="models/v1.joblib",
                               report={"validation": {"overall": {"n": 10}}})  # fmt: skip
    assert first.status == "candidate"
    registry.add_model("v2", trained_at=t0 + dt.timedelta(days=7), sha256="b" * 64, path="m/v2")
    registry.promote("v1", reason="test", check_artifact=False)
    assert registry.champion().version == "v1"
    registry.promote("v2", reason="test", check_artifact=False)
    champion = registry.champion()
    assert (champion.version, champion.trained_at, champion.path) == (
        "v2", t0 + dt.timedelta(days=7), str(Path(store.path).parent / "m" / "v2"),
    )  # fmt: skip
    assert [(m.version, m.status) for m in registry.models()] == [
        ("v1", "retired"),
        ("v2", "champion"),
    ]
    assert registry.models()[0].report == {"validation": {"overall": {"n": 10}}}
    with pytest.raises(StoreError, match="model version 'v9' is not registered"):
        registry.promote("v9", reason="test", check_artifact=False)
    with pytest.raises(StoreError, match="model version 'v1' is already registered"):
        registry.add_model("v1", trained_at=t0, sha256="c", path="x")
    with pytest.raises(StoreError, match=r"add_model\(trained_at\) = .*time zone-aware"):
        registry.add_model("v3", trained_at=dt.datetime(2024, 1, 1), sha256="c", path="x")


def test_retrain_runs_are_recorded_in_order(store):
    t0 = dt.datetime(2024, 1, 6, 21, tzinfo=UTC)
    assert Registry(store).last_retrain_run() is None
    first = Registry(store).add_retrain_run(trigger="schedule", started_at=t0,
                                  finished_at=t0 + dt.timedelta(minutes=3), promoted=False,
                                  reason="gate: balanced accuracy below champion")  # fmt: skip
    second = Registry(store).add_retrain_run(trigger="drift", started_at=t0, finished_at=t0,
                                   promoted=True, reason="ok", version="v2",
                                   report={"duration_seconds": 1.5})  # fmt: skip
    assert second.id > first.id
    last = Registry(store).last_retrain_run()
    assert last == second
    assert (last.version, last.trigger, last.promoted, last.report) == (
        "v2", "drift", True, {"duration_seconds": 1.5},
    )  # fmt: skip


# -- crash safety --------------------------------------------------------------------------

WRITER = """
import datetime as dt
import sys

import numpy as np

from daemon.store.sqlite import Store
from daemon.domain import BarRow, SampleRow


def size(start):
    return 1 + (start * 7919) % 13


def day(m):
    return (dt.date(2000, 1, 1) + dt.timedelta(days=m // 5)).isoformat()


with Store(sys.argv[1], busy_timeout_ms=10_000) as store:
    n = store.offsets("market.bars").get(0, 0)
    print("start", n, flush=True)
    while n < 1_000_000:
        k = size(n)
        store.write_batch(
            bars=[
                BarRow(f"S{m % 5}", day(m), 1.0, 2.0, 0.5, 1.5, float(m), vix=float(n),
                       vix_source="vix")
                for m in range(n, n + k)
            ],
            samples=[
                SampleRow(f"S{m % 5}", day(m), "live", "normal", 1.0, None,
                          np.full(4, m, dtype=np.float32), 1)
                for m in range(n, n + k)
            ],
            offsets={("market.bars", 0): n + k},
            counters={"messages": k},
        )
        n += k
        print("committed", n, flush=True)
"""


def batch_size(start: int) -> int:
    return 1 + (start * 7919) % 13


class Lines:
    """Lines from a child's stdout, each wait bounded by a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        assert proc.stdout is not None
        self.selector.register(proc.stdout, selectors.EVENT_READ)

    def next(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"the writer printed nothing for {timeout} s"
            if self.selector.select(left):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, f"the writer exited early with {self.proc.poll()}"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self.selector.close()


def check_whole_batches(path: Path) -> int:
    """Check the file after a kill and return its stored next offset."""
    conn = raw(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        row = conn.execute(
            "SELECT next_offset FROM kafka_offsets WHERE topic = 'market.bars' AND partition = 0"
        ).fetchone()
        next_offset = 0 if row is None else row[0]
        bars = conn.execute("SELECT CAST(volume AS INTEGER), CAST(vix AS INTEGER) FROM bars")
        messages, batch_ids = zip(*bars.fetchall(), strict=True) if next_offset else ((), ())
        features = conn.execute("SELECT features FROM samples").fetchall()
        sample_ids = sorted(int(np.frombuffer(f, dtype=np.float32)[0]) for (f,) in features)
        counter = conn.execute("SELECT value FROM counters WHERE name = 'messages'").fetchone()
    finally:
        conn.close()
    # Every message up to the stored offset exactly once, nothing beyond it.
    assert sorted(messages) == list(range(next_offset))
    assert sample_ids == list(range(next_offset))
    assert (counter[0] if counter else 0) == next_offset
    # Every committed batch is whole, and the batches chain up to the stored offset.
    per_batch = collections.Counter(batch_ids)
    start = 0
    while start < next_offset:
        assert per_batch.pop(start) == batch_size(start), f"batch {start} is partial"
        start += batch_size(start)
    assert start == next_offset
    assert not per_batch
    return next_offset


@pytest.mark.integration
def test_sigkill_at_random_points_never_leaves_a_partial_batch(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "crash.db"
    errors = tmp_path / "writer.err"
    rng = random.Random(20240601)
    expected_start = 0
    total_reported = 0
    for _ in range(10):
        with errors.open("ab") as err:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=err
            )
        lines = Lines(proc)
        try:
            assert lines.next() == f"start {expected_start}", errors.read_text()
            reported = expected_start
            for _ in range(rng.randint(0, 25)):
                reported = int(lines.next().split()[1])
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            lines.close()
            proc.stdout.close()
        stored = check_whole_batches(path)
        assert stored >= reported, "a commit the writer reported was lost"
        total_reported = max(total_reported, reported)
        expected_start = stored
    assert expected_start > 0
    assert total_reported > 0


def test_recent_bars_are_the_latest_n_oldest_first(tmp_path):
    with Store(tmp_path / "r.db") as store:
        rows = [
            BarRow("AAA", f"2020-01-{d:02d}", 1.0, 1.0, 1.0, 1.0 + d, 0.0) for d in range(1, 21)
        ]
        store.write_batch(bars=[*rows, BarRow("BBB", "2020-01-05", 1.0, 1.0, 1.0, 9.0, 0.0)])
        recent = store.recent_bars("AAA", 5)
        assert list(recent["close"]) == [17.0, 18.0, 19.0, 20.0, 21.0]
        assert recent["ts"].is_monotonic_increasing
        assert len(store.recent_bars("AAA", 100)) == 20
        assert store.recent_bars("ZZZ", 5).empty
        with pytest.raises(StoreError, match=r"recent_bars\(n=0\)"):
            store.recent_bars("AAA", 0)
