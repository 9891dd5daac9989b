"""`regimed store migrate`: a single-host SQLite store, its registry and its model bundles
copied into PostgreSQL in one verified transaction; a second host then serves its champion."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
import pytest

from daemon.domain import BarRow, LabelUpdate, PredictionRow, SampleRow
from daemon.registry.versions import Registry
from daemon.store.outbox import Outbox
from daemon.store.postgres import PgConnection, PostgresStore
from daemon.store.sqlite import Store
from daemon.store.transfer import TABLES, table_digest
from tests.factories import register


def fill(store: Store) -> None:
    """A few rows in every table, with awkward values (NaN-free floats that need all 17
    digits, NULLs, bytes, unicode)."""
    features = np.array([0.1, 1e-300, -2.5], dtype=np.float32)
    store.write_batch(
        bars=[
            BarRow("SPY", "2020-01-02", 0.1 + 0.2, 2.0, 0.5, 1.5, 1e6, "normal", None, "proxy"),
            BarRow("Ünï", "2020-01-02", 1.0, 2.0, 0.5, 1.5, 10.0, None, 16.5, "vix"),
        ],
        samples=[
            SampleRow("SPY", "2020-01-02", "live", "normal", 1 / 3, None, features, 1),
            SampleRow("SPY", "2008-10-10", "archive", "crash", 2.0, 1, features, 1, "gfc"),
        ],
        predictions=[PredictionRow("SPY", "2020-01-02", "v1", 0.75, 1, "normal")],
        offsets={("bars", 0): 7, ("bars", 3): 2**40},
        counters={"rejected_events": 3},
        dead_letters=[("bars", 0, 5, "bad json", None, b"\xff\x00", "[]", "2020-01-02")],
        outbox=[("regimes", b"SPY", b'{"x": 1}')],
    )
    store.write_batch(labels=[LabelUpdate("SPY", "2020-01-02", "live", 0)])


def test_a_store_moves_with_equal_tables_and_its_champion_serves_elsewhere(
    run_cli, tmp_path, postgres_url, models
):
    source_path = tmp_path / "host-a" / "regimed.db"
    source_path.parent.mkdir()
    with Store(source_path) as source:
        fill(source)
        register(Registry(source), "v1", models, promote_reason="gate passed: first model")
        Registry(source).add_retrain_run(
            version="v1", trigger="schedule", started_at=dt.datetime(2024, 1, 6, tzinfo=dt.UTC),
            finished_at=dt.datetime(2024, 1, 6, 1, tzinfo=dt.UTC), promoted=True, reason="ok",
        )  # fmt: skip
        with source.transaction("digest", write=False) as conn:
            expected = {t.name: table_digest(conn, t) for t in TABLES}

    result = run_cli("store", "migrate", "--from", str(source_path), "--to", postgres_url)
    assert result.code == 0, result.err
    assert f"verified: {len(TABLES) + 1} tables" in result.out  # and the bundle files

    host_b = tmp_path / "host-b"
    host_b.mkdir()
    with PostgresStore(postgres_url, path=str(host_b / "regimed.db")) as target:
        with target.transaction("digest", write=False) as conn:
            assert {t.name: table_digest(conn, t) for t in TABLES} == expected
        assert all(n > 0 for n, _ in expected.values())
        record, bundle = Registry(target).load()
        assert record.version == "v1"
        assert record.path == str(host_b / "models" / "v1")
        assert set(bundle.models) == set(models)
        before = Outbox(target).oldest(10)[-1].id
        target.write_batch(outbox=[("regimes", b"QQQ", b"{}")])
        assert Outbox(target).oldest(10)[-1].id > before  # the sequence continues after

    again = run_cli("store", "migrate", "--from", str(source_path), "--to", postgres_url)
    assert again.code == 1
    assert "already holds" in again.err


def test_a_bad_source_or_url_is_a_usage_error(run_cli, tmp_path):
    missing = run_cli("store", "migrate", "--from", str(tmp_path / "no.db"), "--to", "x://y")
    assert missing.code == 2
    assert "no.db" in missing.err
    (tmp_path / "a.db").touch()
    bad = run_cli("store", "migrate", "--from", str(tmp_path / "a.db"), "--to", "mysql://h/db")
    assert bad.code == 2
    assert "store.url" in bad.err


@pytest.fixture(autouse=True)
def _no_pgpassword(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)


def test_the_copy_is_all_or_nothing(run_cli, tmp_path, postgres_url, monkeypatch):
    """A copy that loses a row (here: the last bar, dropped on its way in) is found by the
    check and commits nothing."""
    source_path = tmp_path / "regimed.db"
    with Store(source_path) as source:
        fill(source)
    real = PgConnection.copy_in

    def lossy(self, table, columns, rows):
        rows = list(rows)
        return real(self, table, columns, rows[:-1] if table == "bars" else rows)

    monkeypatch.setattr(PgConnection, "copy_in", lossy)
    result = run_cli("store", "migrate", "--from", str(source_path), "--to", postgres_url)
    assert result.code == 1
    assert "differs from" in result.err
    assert "bars" in result.err
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (0,)
