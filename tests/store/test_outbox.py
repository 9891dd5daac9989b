"""The outbox: records stored in their batch's transaction (all or nothing), read oldest first,
forgotten once published, and counted right after a rolled-back batch."""

from __future__ import annotations

import pytest

from daemon.domain import BarRow
from daemon.errors import StoreError
from daemon.pipeline.records import regime_records
from daemon.store.outbox import Outbox, OutboxRecord


def bars(*days: str) -> list[BarRow]:
    return [BarRow("SPY", day, 1.0, 2.0, 0.5, 1.5, 10.0, "normal", 16.5, "vix") for day in days]


@pytest.fixture
def store(backend_store):
    return backend_store


def test_records_are_stored_with_their_batch_and_read_back_byte_for_byte(store):
    first = bars("2020-01-02", "2020-01-03")
    records = regime_records("regimes", first)
    result = store.write_batch(bars=first, outbox=records, offsets={("bars", 0): 2})
    assert result.outbox_written == 2
    outbox = Outbox(store)
    assert outbox.pending() == 2
    stored = outbox.oldest(10)
    assert [(r.topic, r.key, r.value) for r in stored] == records
    assert stored[0].id < stored[1].id


def test_a_failed_batch_stores_none_of_its_records(store):
    store.write_batch(bars=bars("2020-01-02"), outbox=regime_records("r", bars("2020-01-02")))
    with pytest.raises(StoreError, match=r"(?i)not.null"):
        store.write_batch(  # its second record fails inside the transaction: all rolls back
            bars=bars("2020-01-03"),
            outbox=[*regime_records("r", bars("2020-01-03")), ("r", b"SPY", None)],
        )
    assert store.bar_count() == 1
    store.write_batch(bars=bars("2020-01-06"), outbox=regime_records("r", bars("2020-01-06")))
    outbox = Outbox(store)
    kept = outbox.oldest(10)
    assert [b'"2020-01-03"' in r.value for r in kept] == [False, False]
    assert outbox.pending() == len(kept) == 2  # the ids left form one range


def test_published_records_are_forgotten_oldest_first(store):
    days = [f"2020-02-{d:02d}" for d in range(3, 8)]
    store.write_batch(bars=bars(*days), outbox=regime_records("r", bars(*days)))
    outbox = Outbox(store)
    first_two = outbox.oldest(2)
    assert outbox.published(first_two[-1].id) == 2
    rest = outbox.oldest(10)
    assert outbox.pending() == len(rest) == 3
    assert all(isinstance(r, OutboxRecord) and r.id > first_two[-1].id for r in rest)
    assert outbox.published(rest[-1].id) == 3
    assert (outbox.pending(), outbox.oldest(10)) == (0, [])
    # An emptied outbox never gives an id twice (AUTOINCREMENT): positions only move forward.
    store.write_batch(outbox=regime_records("r", bars("2020-02-10")))
    assert outbox.oldest(1)[0].id > rest[-1].id


def test_a_record_that_commits_after_a_read_past_it_is_not_forgotten(postgres_url, tmp_path):
    """Two daemons of a shared PostgreSQL store: a record with a smaller id commits after the
    publisher read past it, and forgetting what was published keeps it (on SQLite the write
    lock makes batches commit in id order)."""
    from daemon.store.postgres import PostgresStore

    with (
        PostgresStore(postgres_url, path=str(tmp_path / "a.db")) as slow,
        PostgresStore(postgres_url, path=str(tmp_path / "b.db")) as fast,
    ):
        with slow.transaction("a slow batch", write=True) as conn:
            conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('r', 'late', 'x')")
            fast.write_batch(outbox=[("r", b"SPY", b"y")])
            outbox = Outbox(fast)
            read = outbox.oldest(10)
        assert [r.key for r in read] == [b"SPY"]
        assert outbox.published(read[-1].id) == 1
        assert [r.key for r in outbox.oldest(10)] == [b"late"]
