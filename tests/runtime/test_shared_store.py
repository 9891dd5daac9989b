"""Daemons sharing a PostgreSQL store, driven poll by poll through their ingest steps: `^VIX`
for every daemon (one that does not consume the VIX partition labels with the VIX another
stored), and a partition handed from one daemon to another without a gap (the rows after the
handover equal the offline batch path's, bar for bar)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from consumers.events import DecodedBatch
from consumers.step import Poll
from daemon.config import Config, StoreConfig
from daemon.monitor.metrics import Metrics
from daemon.pipeline.engine import history_rows
from daemon.runtime.ingest import Ingest
from daemon.store.postgres import PostgresStore

Ohlcv = tuple[float, float, float, float, float]


def poll(partition: int, bars: list[tuple[str, dt.date, float]]) -> Poll:
    """A poll of bars given by their close."""
    return ohlc_poll(partition, [(s, d, (c, c * 1.01, c * 0.99, c, 1e6)) for s, d, c in bars])


def ohlc_poll(partition: int, bars: list[tuple[str, dt.date, Ohlcv]], end: int = 0) -> Poll:
    """A poll of bars of one partition whose next offset is `end` (default: the bar count)."""
    batch = DecodedBatch()
    for i, (symbol, day, (o, h, lo, c, v)) in enumerate(bars):
        batch.index.append(i)
        batch.symbols.append(symbol)
        batch.ts.append(day.isoformat())
        batch.days.append(day)
        batch.open.append(o)
        batch.high.append(h)
        batch.low.append(lo)
        batch.close.append(c)
        batch.volume.append(v)
    return Poll(batch, {("bars", partition): end or len(bars)}, len(bars), Counter(), [])


@pytest.fixture
def daemons(tmp_path, postgres_url):
    """Two daemons' ingest steps, each with its own connection to one PostgreSQL store."""
    config = Config().replace(
        store=StoreConfig(path=str(tmp_path / "regimed.db"), url=postgres_url)
    )
    with (
        PostgresStore.connect(config.store) as store_a,
        PostgresStore.connect(config.store) as store_b,
    ):
        yield (
            Ingest(config, store_a, Metrics.create(CollectorRegistry())),
            Ingest(config, store_b, Metrics.create(CollectorRegistry())),
        )


def test_a_daemon_without_the_vix_partition_labels_with_the_stored_vix(daemons):
    a, b = daemons
    days = [dt.date(2020, 3, 2) + dt.timedelta(days=i) for i in range(3)]
    a.resume()
    b.resume()  # before any VIX is stored
    a.write(poll(0, [("^VIX", day, 40.0 + i) for i, day in enumerate(days)]))
    b.write(poll(1, [("SPY", days[-1], 300.0)]))
    spy = b.store.bars(symbol="SPY")
    assert spy["vix_source"].tolist() == ["vix"]
    assert spy["vix"].tolist() == [42.0]


def test_a_partition_handed_to_another_daemon_continues_without_a_gap(daemons, sp500, vix):
    """Daemon A consumes ^VIX (partition 0) and ^GSPC (partition 1); half way through, ^GSPC's
    partition moves to daemon B, which rebuilds the symbol's state from the shared store: the
    stored bars and samples equal the batch path's over the whole history, with no second
    warm-up."""
    a, b = daemons
    bars = sp500.loc["2013-01-01":]
    days = [ts.date() for ts in pd.DatetimeIndex(bars.index)]
    ohlcv = list(bars[["open", "high", "low", "close", "volume"]].itertuples(index=False))
    closes = {ts.date(): float(v) for ts, v in vix.items()}
    step, handover = 25, len(days) // 2
    a.resume()
    for first in range(0, len(days), step):
        window = range(first, min(first + step, len(days)))
        vix_bars = [
            ("^VIX", days[k], (closes[days[k]],) * 4 + (0.0,)) for k in window if days[k] in closes
        ]
        gspc = [("^GSPC", days[k], tuple(map(float, ohlcv[k]))) for k in window]
        if first < handover:
            a.write(ohlc_poll(0, vix_bars + gspc, end=first + len(window)))
            continue
        if first - step < handover:  # the rebalance: A loses ^GSPC's partition to B
            a.forget(["^GSPC"])
            b.resume()
        a.write(ohlc_poll(0, vix_bars, end=first + len(window)))
        b.write(ohlc_poll(1, gspc, end=first + len(window)))
    stored = b.store.bars(symbol="^GSPC")
    meta, x = b.store.read_samples(source="live", labelled=None)
    batch_bars, batch_samples = history_rows(b.config, "^GSPC", bars, vix)
    assert len(stored) == len(batch_bars) == len(days)
    regimes = [None if r != r else r for r in stored["regime"].astype(object)]
    assert regimes == [r.regime for r in batch_bars]
    assert list(stored["vix_source"].astype(object)) == [r.vix_source for r in batch_bars]
    assert len(meta) == len(batch_samples)
    assert list(meta["ts"].dt.strftime("%Y-%m-%d")) == [s.ts for s in batch_samples]
    np.testing.assert_allclose(
        x, np.stack([s.features for s in batch_samples]), rtol=1e-6, atol=1e-9
    )
    labels = [None if pd.isna(v) else int(v) for v in meta["label"]]
    assert labels == [s.label for s in batch_samples]
