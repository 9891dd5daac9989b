"""`^VIX` for every daemon of a shared store: a daemon that does not consume the VIX partition
labels its bars with the VIX another daemon stored."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from prometheus_client import CollectorRegistry

from consumers.events import DecodedBatch
from consumers.step import Poll
from daemon.config import Config, StoreConfig
from daemon.monitor.metrics import Metrics
from daemon.runtime.ingest import Ingest
from daemon.store.postgres import PostgresStore


def poll(partition: int, bars: list[tuple[str, dt.date, float]]) -> Poll:
    batch = DecodedBatch()
    for i, (symbol, day, close) in enumerate(bars):
        batch.index.append(i)
        batch.symbols.append(symbol)
        batch.ts.append(day.isoformat())
        batch.days.append(day)
        batch.open.append(close)
        batch.high.append(close * 1.01)
        batch.low.append(close * 0.99)
        batch.close.append(close)
        batch.volume.append(1e6)
    return Poll(batch, {("bars", partition): len(bars)}, len(bars), Counter(), [])


def test_a_daemon_without_the_vix_partition_labels_with_the_stored_vix(tmp_path, postgres_url):
    config = Config().replace(
        store=StoreConfig(path=str(tmp_path / "regimed.db"), url=postgres_url)
    )
    days = [dt.date(2020, 3, 2) + dt.timedelta(days=i) for i in range(3)]
    with (
        PostgresStore.connect(config.store) as store_a,
        PostgresStore.connect(config.store) as store_b,
    ):
        a = Ingest(config, store_a, Metrics.create(CollectorRegistry()))
        b = Ingest(config, store_b, Metrics.create(CollectorRegistry()))
        a.resume()
        b.resume()  # before any VIX is stored
        a.write(poll(0, [("^VIX", day, 40.0 + i) for i, day in enumerate(days)]))
        b.write(poll(1, [("SPY", days[-1], 300.0)]))
        spy = store_b.bars(symbol="SPY")
    assert spy["vix_source"].tolist() == ["vix"]
    assert spy["vix"].tolist() == [42.0]
