from __future__ import annotations

import numpy as np
import pytest

from consumers.replay import bundled_events
from daemon.config import Config
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import Bar
from daemon.pipeline.engine import Output, Pipeline, history_rows


def stream(config: Config, events) -> Output:
    """Run the per-event pipeline over events, then apply matured labels to the samples."""
    pipeline = Pipeline(config)
    out = Output()
    for e in events:
        pipeline.process(Bar(e.symbol, e.day, e.open, e.high, e.low, e.close, e.volume), out)
    return out


@pytest.fixture(scope="module")
def streamed():
    config = Config()
    events = [e for e in bundled_events() if e.symbol in ("^GSPC", "^VIX")]
    return config, stream(config, events)


def test_per_event_and_batch_rows_match_on_the_bundled_history(streamed):
    config, out = streamed
    bars = read_bars_csv(bundled_path("sp500"))
    vix = read_vix_csv(bundled_path("vix"))
    batch_bars, batch_samples = history_rows(config, "^GSPC", bars, vix)

    live_bars = [b for b in out.bars if b.symbol == "^GSPC"]
    assert [(b.ts, b.close, b.regime, b.vix_source) for b in live_bars] == [
        (b.ts, b.close, b.regime, b.vix_source) for b in batch_bars
    ]
    np.testing.assert_allclose(
        [np.nan if b.vix is None else b.vix for b in live_bars],
        [np.nan if b.vix is None else b.vix for b in batch_bars],
        rtol=1e-12,
    )

    assert [(s.ts, s.regime, s.weight) for s in out.samples] == [
        (s.ts, s.regime, s.weight) for s in batch_samples
    ]
    live = np.stack([s.features for s in out.samples])
    batch = np.stack([s.features for s in batch_samples])
    np.testing.assert_allclose(live, batch, rtol=1e-6, atol=1e-9)  # float32 in the store

    matured = {u.ts: u.label for u in out.labels}
    h = config.label.horizon_bars
    assert [s.label for s in batch_samples[-h:]] == [None] * h
    for s in batch_samples[:-h]:
        assert matured[s.ts] == s.label
    assert out.withheld == len(live_bars) - len(out.samples)


def test_vix_bars_are_stored_and_the_market_symbol_reported(streamed):
    _, out = streamed
    vix_rows = [b for b in out.bars if b.symbol == "^VIX"]
    assert len(vix_rows) == 1259
    assert all(b.regime is None and b.vix == b.close for b in vix_rows)
    spy = Config().replace(regime=Config().regime.__class__(market_symbol="SPY"))
    again = stream(spy, [e for e in bundled_events()[:200] if e.symbol == "^GSPC"])
    assert again.market is None  # SPY is not in this stream
    assert out.market is not None and out.market.regime is not None  # the default, ^GSPC


def test_late_repeated_and_corrected_bars_are_stored_not_fed():
    config = Config()
    pipeline = Pipeline(config)
    out = Output()
    events = [e for e in bundled_events() if e.symbol == "^GSPC"][:30]
    bars = [Bar(e.symbol, e.day, e.open, e.high, e.low, e.close, e.volume) for e in events]
    for bar in bars:
        pipeline.process(bar, out)
    state_before = pipeline.symbols["^GSPC"].features.bars
    pipeline.process(bars[-1], out)  # exact repeat of the last bar
    assert out.bars[-1] == out.bars[-2]
    assert out.out_of_order == 0
    pipeline.process(bars[5], out)  # an old bar
    pipeline.process(
        Bar(**{**bars[-1].__dict__, "close": bars[-1].close * 1.01, "high": bars[-1].high * 1.02}),
        out,
    )  # a corrected last bar
    assert out.out_of_order == 2
    assert pipeline.symbols["^GSPC"].features.bars == state_before
    assert out.bars[-1].regime is None
