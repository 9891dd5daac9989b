"""A restart in the middle of a stream changes nothing: state comes back from SQLite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consumers.replay import bundled_events
from daemon.config import Config, StoreConfig
from daemon.pipeline.engine import Output, Pipeline
from daemon.store.sqlite import Store

RESTORE_BARS = 1000


def run(pipeline: Pipeline, events, store: Store, batch: int = 250) -> None:
    """Feed events in batches, each written in one transaction, like the consumer."""
    for start in range(0, len(events), batch):
        out = Output()
        for event in events[start : start + batch]:
            pipeline.process(event, out)
        store.write_batch(bars=out.bars, samples=out.samples, labels=out.labels)


def snapshot(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    bars = store.bars()
    meta, x = store.read_samples(source="live", labelled=None)
    return bars, meta, x


@pytest.fixture(scope="module")
def events():
    return [e for e in bundled_events() if e.symbol in ("^GSPC", "^IXIC", "^VIX")]


@pytest.fixture(scope="module")
def uninterrupted(events, tmp_path_factory):
    path = tmp_path_factory.mktemp("straight") / "s.db"
    with Store(path) as store:
        run(Pipeline(Config()), events, store)
        return snapshot(store)


@pytest.mark.parametrize("split", [150, 4000, 6000, 11000])
def test_restart_mid_stream_gives_the_same_store(events, uninterrupted, tmp_path, split):
    config = Config(store=StoreConfig(path=str(tmp_path / "r.db")))
    with Store.open(config.store) as store:
        run(Pipeline(config), events[:split], store)
        pending_before = store.pending_samples()[["symbol", "ts"]]
    # A new process: nothing in memory, everything from the store.
    with Store.open(config.store) as store:
        pipeline = Pipeline(config, history=lambda s: store.recent_bars(s, RESTORE_BARS))
        pipeline.load_vix(store.bars(symbol="^VIX"))
        run(pipeline, events[split:], store)
        bars, meta, x = snapshot(store)
        pending_after = len(store.pending_samples())
    want_bars, want_meta, want_x = uninterrupted
    pd.testing.assert_frame_equal(bars, want_bars)
    pd.testing.assert_frame_equal(meta, want_meta)
    np.testing.assert_allclose(x, want_x, rtol=1e-6, atol=1e-9)
    # Pending rows survived the restart and got their labels once their future arrived.
    assert pending_after == 2 * Config().label.horizon_bars
    if split > 1000:
        assert len(pending_before) == 2 * Config().label.horizon_bars
    labelled = meta.set_index(["symbol", "ts"])["label"]
    for symbol, ts in pending_before.itertuples(index=False):
        assert not pd.isna(labelled.loc[(symbol, ts)])
    assert pipeline.restored == 2
