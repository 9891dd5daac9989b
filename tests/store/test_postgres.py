"""What only the PostgreSQL store has: recorded migrations in a shared database, several
processes' stores on one database, its configuration and its messages. The behaviour both
backends share is tested once, against both, in test_store.py, test_outbox.py and the registry
tests (the `backend_store` fixture)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from daemon.config import Secret, StoreConfig
from daemon.domain import BarRow
from daemon.errors import ConfigError, ForeignStoreError, StoreError
from daemon.store import migrations as _migrations
from daemon.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
from daemon.store.postgres import PgConnection, PostgresStore, translate, where_of
from daemon.store.sqlite import Store
from tests.factories import wait_for


def bar(symbol: str, ts: str, close: float = 1.5) -> BarRow:
    return BarRow(symbol, ts, 1.0, 2.0, 0.5, close, 10.0, "normal", 16.5, "vix")


def day(i: int) -> str:
    return f"2020-{1 + i // 28:02d}-{1 + i % 28:02d}"


@pytest.fixture
def opened():
    stores: list[PostgresStore] = []
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def open_pg(postgres_url, tmp_path, opened):
    def _open(**kwargs):
        s = PostgresStore(postgres_url, path=str(tmp_path / "regimed.db"), **kwargs)
        opened.append(s)
        return s

    return _open


def recorded(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows.fetchall()]


def test_a_fresh_database_records_every_migration_once(open_pg, postgres_url):
    open_pg()
    open_pg()
    assert recorded(postgres_url) == [(m.version, m.name) for m in MIGRATIONS]
    assert open_pg().schema_version() == LATEST_VERSION


def test_stores_opened_together_migrate_once(postgres_url, tmp_path, opened):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(postgres_url, path=str(tmp_path / "x.db")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert recorded(postgres_url) == [(m.version, m.name) for m in MIGRATIONS]


def test_a_database_of_another_program_is_refused_and_left_alone(postgres_url, open_pg):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE inventory (item TEXT)")
    with pytest.raises(ForeignStoreError, match=r"no regimed migration record \(table inventory"):
        open_pg()
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    assert tables == [("inventory",)]


def test_a_migration_without_its_postgresql_twin_is_named(open_pg, monkeypatch):
    extra = Migration(LATEST_VERSION + 1, "sqlite_only_step", ("SELECT 1",))
    monkeypatch.setattr(_migrations, "MIGRATIONS", (*MIGRATIONS, extra))
    with pytest.raises(StoreError, match="migration 'sqlite_only_step' has no PostgreSQL"):
        open_pg()


def test_read_only_reads_and_refuses_writes_and_unmigrated_databases(open_pg, postgres_url):
    with pytest.raises(StoreError, match="schema version 0, expected"):
        open_pg(read_only=True)
    open_pg().write_batch(bars=[bar("SPY", day(0))], offsets={("bars", 0): 1})
    reader = open_pg(read_only=True)
    assert reader.offsets("bars") == {0: 1}
    with pytest.raises(StoreError, match="opened read-only; cannot write a batch"):
        reader.write_batch(bars=[bar("SPY", day(1))])


def test_two_stores_on_one_database_write_batches_side_by_side(open_pg):
    """Two daemons' stores, each writing its own partition's batches at the same time: every
    bar stored once, each partition's offset the last one written."""
    stores = [open_pg(), open_pg()]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(40):
                stores[k].write_batch(
                    bars=[bar(f"S{k}{j}", day(i)) for j in range(5)],
                    offsets={("bars", k): i + 1},
                    counters={"batches": 1},
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert stores[0].bar_count() == 2 * 40 * 5
    assert stores[1].offsets("bars") == {0: 40, 1: 40}
    assert stores[0].counter("batches") == 80


def test_a_batch_is_invisible_to_other_stores_until_it_commits(open_pg, monkeypatch):
    """Another store looks while the batch's bars are staged: it sees neither them nor the
    batch's offsets, then both once the batch commits."""
    writer, reader = open_pg(), open_pg()
    seen: list[tuple[int, dict[int, int]]] = []
    original = PgConnection.stage

    def stage_and_look(self, table, rows):
        original(self, table, rows)
        seen.append((reader.bar_count(), reader.offsets("bars")))

    monkeypatch.setattr(PgConnection, "stage", stage_and_look)
    writer.write_batch(bars=[bar("SPY", day(0))], offsets={("bars", 0): 1})
    assert seen == [(0, {})]
    assert (reader.bar_count(), reader.offsets("bars")) == (1, {0: 1})


def test_store_open_picks_the_backend_from_store_url(postgres_url, tmp_path):
    with Store.open(StoreConfig(path=str(tmp_path / "a.db"), url=postgres_url)) as store:
        assert isinstance(store, PostgresStore)
        assert store.path == str(tmp_path / "a.db")
    with Store.open(StoreConfig(path=str(tmp_path / "b.db"))) as store:
        assert not isinstance(store, PostgresStore)
    assert not (tmp_path / "a.db").exists()


def test_an_unreachable_server_names_the_database_without_the_password(tmp_path):
    config = StoreConfig(
        path=str(tmp_path / "a.db"),
        url="postgresql://regimed@127.0.0.1:1/regimed?connect_timeout=2",
        password=Secret("hunter2"),
    )
    with pytest.raises(StoreError, match=r"postgresql://regimed@127.0.0.1:1/regimed: cannot") as e:
        Store.open(config)
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", 'store.url: scheme "mysql": expected empty'),
        ("postgresql://u:secret@h/db", "store.url: a password in the URL"),
    ],
)
def test_bad_store_urls_are_refused_by_key(url, message):
    with pytest.raises(ConfigError, match=message) as e:
        StoreConfig(url=url)
    assert "secret" not in str(e.value)


def test_placeholders_translate_outside_string_literals():
    assert translate("SELECT ? WHERE a = ?") == ("SELECT %s WHERE a = %s", None)
    assert translate("WHERE a = ?2 OR b = ?1 OR c = ?2") == (
        "WHERE a = %(p2)s OR b = %(p1)s OR c = %(p2)s",
        ("p2", "p1"),
    )
    assert translate("SELECT ':x ?', x::text FROM t WHERE y = :y") == (
        "SELECT ':x ?', x::text FROM t WHERE y = %(y)s",
        ("y",),
    )
    assert where_of("postgresql://u@db.example:6543/regimed?sslmode=require") == (
        "postgresql://u@db.example:6543/regimed"
    )


def test_a_read_sees_one_snapshot_while_other_stores_commit(open_pg):
    reader, writer = open_pg(), open_pg()
    writer.write_batch(bars=[bar("SPY", day(0))])
    with reader.transaction("read twice", write=False) as conn:
        first = conn.execute("SELECT count(*) FROM bars").fetchone()
        writer.write_batch(bars=[bar("SPY", day(1))])
        second = conn.execute("SELECT count(*) FROM bars").fetchone()
    assert first == second == (1,)
    assert reader.bar_count() == 2


def test_a_feature_version_two_daemons_record_at_once_is_taken_as_committed(open_pg, postgres_url):
    """B's first batch of a feature version meets A's uncommitted record of the same version:
    B waits for A, then takes A's row instead of failing on the duplicate key."""
    import numpy as np

    from daemon.domain import SampleRow

    a, b = open_pg(), open_pg()
    row = SampleRow("SPY", day(0), "live", "normal", 1.0, None, np.ones(3), 1)
    errors: list[BaseException] = []

    def write_b() -> None:
        try:
            b.write_batch(samples=[row])
        except BaseException as exc:
            errors.append(exc)

    with a.transaction("record a feature set", write=True) as conn:
        conn.execute("INSERT INTO feature_sets (version, n_features) VALUES (1, 3)")
        thread = threading.Thread(target=write_b)
        thread.start()
        with psycopg.connect(postgres_url, autocommit=True) as watcher:  # fresh statistics
            wait_for(
                lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()[0],
                30,
                "B to wait for A's feature set",
            )
    thread.join(30)
    assert errors == []
    assert b.read_samples(labelled=None)[1].shape == (1, 3)
