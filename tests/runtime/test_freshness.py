"""Freshness metrics: when the newest record was consumed and the newest bar's day, set by the
ingest step, kept in the store and shown again after a restart."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from consumers.events import decode_batch
from consumers.step import Poll
from daemon.config import Config, StoreConfig
from daemon.monitor.metrics import Metrics
from daemon.runtime.ingest import LAST_EVENT_COUNTER, Ingest
from daemon.store.sqlite import Store

LAST_EVENT = "regimed_last_event_timestamp_seconds"
NEWEST_BAR = "regimed_newest_bar_timestamp_seconds"


def record(symbol: str, day: str) -> tuple[bytes, bytes]:
    bar = {"symbol": symbol, "ts": day, "open": 10, "high": 11, "low": 9, "close": 10.5}
    return symbol.encode(), json.dumps({**bar, "volume": 1000}).encode()


def poll(*records: tuple[bytes, bytes], offset: int = 1, partition: int = 0) -> Poll:
    decoded = decode_batch(list(records))
    rejected = Counter(e.reason for _, e in decoded.rejected)
    return Poll(
        bars=decoded if len(decoded) else None,
        offsets={("market.bars", partition): offset},
        valid=len(decoded),
        rejected=rejected,
        dead_letters=[],
    )


def day_seconds(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()


@contextmanager
def ingesting(config: Config, store: Store, metrics: Metrics) -> Iterator[Ingest]:
    """An opened ingest step; its last batch settled and the step closed on the way out."""
    ingest = Ingest(config, store, metrics)
    ingest.open()
    try:
        yield ingest
        ingest.settle()
    finally:
        ingest.close()


@pytest.fixture(params=[False, True], ids=["in-thread", "writer-process"])
def config(request, tmp_path) -> Config:
    return Config(store=StoreConfig(path=str(tmp_path / "f.db"), writer_process=request.param))


def test_a_new_store_shows_no_freshness_yet(config):
    metrics = Metrics.create()
    with Store.open(config.store) as store:
        Ingest(config, store, metrics).show_freshness()
    assert metrics.registry.get_sample_value(LAST_EVENT) == 0
    assert metrics.registry.get_sample_value(NEWEST_BAR) == 0


def test_ingest_sets_freshness_and_a_restart_shows_it_again(config):
    metrics = Metrics.create()
    with Store.open(config.store) as store:
        before = time.time()
        with ingesting(config, store, metrics) as ingest:
            ingest.write(poll(record("AAA", "2024-03-05"), record("BBB", "2024-03-07")))
            # An older bar later on does not move the newest bar's day back.
            ingest.write(poll(record("AAA", "2024-03-04"), offset=2))
        after = time.time()
        consumed = metrics.registry.get_sample_value(LAST_EVENT)
        assert before <= consumed <= after
        assert metrics.registry.get_sample_value(NEWEST_BAR) == day_seconds("2024-03-07")
        assert store.counter(f"{LAST_EVENT_COUNTER}.0") == int(consumed)

    # A restart: new metrics, everything from the store, before any record arrives.
    restarted = Metrics.create()
    with Store.open(config.store) as store:
        Ingest(config, store, restarted).show_freshness()
    assert restarted.registry.get_sample_value(LAST_EVENT) == int(consumed)
    assert restarted.registry.get_sample_value(NEWEST_BAR) == day_seconds("2024-03-07")


def test_a_poll_of_rejected_records_is_fresh_but_brings_no_bar(config):
    metrics = Metrics.create()
    with Store.open(config.store) as store:
        with ingesting(config, store, metrics) as ingest:
            ingest.write(poll((b"AAA", b"not json")))
        assert metrics.registry.get_sample_value(LAST_EVENT) > 0
        assert metrics.registry.get_sample_value(NEWEST_BAR) == 0
        assert store.counter(f"{LAST_EVENT_COUNTER}.0") > 0


def test_the_stored_time_only_grows_when_the_clock_steps_back(config, monkeypatch):
    metrics = Metrics.create()
    with Store.open(config.store) as store:
        with ingesting(config, store, metrics) as ingest:
            monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
            ingest.write(poll(record("AAA", "2024-03-05")))
            monkeypatch.setattr(time, "time", lambda: 1_999_999_000.0)
            ingest.write(poll(record("AAA", "2024-03-06"), offset=2))
        assert store.counter(f"{LAST_EVENT_COUNTER}.0") == 2_000_000_000
        assert metrics.registry.get_sample_value(LAST_EVENT) == 2_000_000_000.0


def test_daemons_sharing_a_store_keep_the_newest_time_of_their_own_partitions(
    tmp_path, monkeypatch
):
    """Two daemons on one store (a consumer group): partition 1 moves from the first to the
    second. Each adds only to its partitions' counters, so the store keeps each partition's
    newest time and a restart shows the newest of all, not a sum."""
    config = Config(store=StoreConfig(path=str(tmp_path / "f.db"), writer_process=False))
    with Store.open(config.store) as store:
        first = Ingest(config, store, Metrics.create())
        second = Ingest(config, store, Metrics.create())
        monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
        first.write(poll(record("AAA", "2024-03-05"), offset=1, partition=0))
        first.write(poll(record("BBB", "2024-03-05"), offset=1, partition=1))
        second.resume()  # partition 1 is assigned to the second daemon
        monkeypatch.setattr(time, "time", lambda: 1_700_000_600.0)
        second.write(poll(record("BBB", "2024-03-06"), offset=2, partition=1))
        monkeypatch.setattr(time, "time", lambda: 1_700_000_300.0)
        first.write(poll(record("AAA", "2024-03-06"), offset=2, partition=0))
        assert store.counter(f"{LAST_EVENT_COUNTER}.0") == 1_700_000_300
        assert store.counter(f"{LAST_EVENT_COUNTER}.1") == 1_700_000_600
    restarted = Metrics.create()
    with Store.open(config.store) as store:
        Ingest(config, store, restarted).show_freshness()
    assert restarted.registry.get_sample_value(LAST_EVENT) == 1_700_000_600
