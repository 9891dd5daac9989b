"""The bank (many symbols per numpy step) gives the per-event path's rows, bit for bit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from consumers.replay import synthetic_events
from daemon.config import Config
from daemon.domain import Bar
from daemon.pipeline.engine import BANK_MIN_SYMBOLS, Output, Pipeline
from daemon.pipeline.features.bank import FeatureBank
from daemon.pipeline.features.event import SymbolFeatures
from daemon.store.sqlite import Store
from tests.factories import columns, final

RESTORE_BARS = 1000


def events(symbols: int, days: int, seed: int = 0) -> list[Bar]:
    return [
        Bar(e.symbol, e.day, e.open, e.high, e.low, e.close, e.volume)
        for e in synthetic_events(symbols, days, seed=seed)
    ]


def per_event(config: Config, bars: Sequence[Bar]) -> Output:
    pipeline = Pipeline(config)
    out = Output()
    for bar in bars:
        pipeline.process(bar, out)
    return out


def batched(pipeline: Pipeline, bars: Sequence[Bar], size: int) -> list[Output]:
    outs = []
    for first in range(0, len(bars), size):
        out = Output()
        pipeline.process_batch(columns(bars[first : first + size]), out)
        outs.append(out)
    return outs


def assert_same(expected: Sequence[Output], got: Sequence[Output]) -> None:
    bars, samples, labels = final(expected)
    bars2, samples2, labels2 = final(got)
    assert bars2 == bars
    assert samples2.keys() == samples.keys()
    differ = [k for k in samples if samples[k] != samples2[k]]
    assert not differ, f"{len(differ)} samples differ, first {differ[:3]}"
    assert labels2 == labels
    for field in ("out_of_order", "withheld"):
        assert sum(getattr(o, field) for o in got) == sum(getattr(o, field) for o in expected)
    assert sum((o.labeled for o in got), start=Output().labeled) == sum(
        (o.labeled for o in expected), start=Output().labeled
    )


@pytest.fixture(scope="module")
def market() -> list[Bar]:
    return events(40, 420)


def test_a_batch_of_many_symbols_gives_the_per_event_rows_bit_for_bit(market):
    config = Config()
    pipeline = Pipeline(config)
    outs = batched(pipeline, market, 2_000)
    assert len(pipeline.bank) == 40  # every symbol ran in the bank after its warm-up
    assert_same([per_event(config, market)], outs)
    regimes = {s.regime for out in outs for s in out.all_samples()}
    assert {"crash", "recovery", "low_volatility"} <= regimes  # the episodes were exercised


def test_labels_of_the_same_batch_are_set_on_its_samples(market):
    config = Config()
    outs = batched(Pipeline(config), market, 2_000)
    _, _, labels = final([per_event(config, market)])
    inline = [
        (s.symbol, s.ts, s.label) for out in outs for s in out.all_samples() if s.label is not None
    ]
    samples = sum(len(out.all_samples()) for out in outs)
    assert len(inline) > samples // 2  # 2,000 bars a batch, 40 symbols: most mature inside
    assert all(labels[(symbol, ts)] == label for symbol, ts, label in inline)
    for out in outs:  # an update only for a sample of an earlier batch
        fresh = {(s.symbol, s.ts) for s in out.all_samples()}
        assert not [u for u in out.all_labels() if (u.symbol, u.ts) in fresh]


def test_without_the_vix_the_proxy_and_staleness_match(market):
    """No VIX bar for a stretch: stale readings, then the proxy, then the VIX again."""
    config = Config()
    days = sorted({b.day for b in market})
    gap = set(days[250:330])
    bars = [b for b in market if not (b.symbol == "^VIX" and b.day in gap)]
    outs = batched(Pipeline(config), bars, 3_000)
    assert_same([per_event(config, bars)], outs)
    sources = {b.vix_source for out in outs for b in out.all_bars()}
    assert {"vix", "proxy"} <= sources


def test_late_repeated_and_corrected_bars_in_and_across_batches(market):
    config = Config()
    bars = list(market)
    rng = np.random.default_rng(1)
    for at in sorted(rng.choice(np.arange(9_000, len(bars)), 60, replace=False), reverse=True):
        bar = bars[at]
        if bar.symbol == "^VIX":
            continue
        kind = at % 3
        if kind == 0:  # an exact repeat, right after or a little later
            bars.insert(at + 1 + at % 50, bar)
        elif kind == 1:  # a correction of the same day
            bars.insert(at + 1 + at % 50, dataclasses.replace(bar, close=bar.close * 1.001))
        else:  # an old bar
            bars.insert(at + 1 + at % 50, bars[at - 400])
    outs = batched(Pipeline(config), bars, 2_500)
    expected = per_event(config, bars)
    assert expected.out_of_order > 10
    assert_same([expected], outs)


def test_a_restart_restores_into_the_bank_and_continues_bit_for_bit(market, tmp_path: Path):
    config = Config()
    half = len(market) // 2
    with Store(tmp_path / "s.db") as store:
        first = Pipeline(config)
        for out in batched(first, market[:half], 2_000):
            store.write_batch(
                bars=out.bars, samples=out.samples, labels=out.labels, block=out.block
            )
        restarted = Pipeline(config, history=lambda s: store.recent_bars(s, RESTORE_BARS))
        restarted.load_vix(store.bars(symbol=config.regime.vix_symbol))
        outs = batched(restarted, market[half:], 2_000)
        assert restarted.restored == 40
        assert len(restarted.bank) == 40
    uninterrupted = Pipeline(config)
    for bar in market[:half]:
        uninterrupted.process(bar, Output())
    expected = Output()
    for bar in market[half:]:
        uninterrupted.process(bar, expected)
    assert_same([expected], outs)


def test_few_symbols_run_bar_by_bar_and_a_symbol_moves_between_the_paths(market):
    config = Config()
    pipeline = Pipeline(config)
    wide = market[:12_000]
    narrow = [b for b in market[12_000:14_000] if b.symbol in ("SYN00000", "^VIX")]
    rest = market[14_000:]
    outs = batched(pipeline, wide, 2_000)
    assert "SYN00000" in pipeline.bank
    outs += batched(pipeline, narrow, 2_000)  # one symbol: below BANK_MIN_SYMBOLS a step
    assert "SYN00000" not in pipeline.bank
    assert pipeline.symbols["SYN00000"].slot is None
    outs += batched(pipeline, rest, 2_000)
    assert "SYN00000" in pipeline.bank
    expected = per_event(config, [*wide, *narrow, *rest])
    assert_same([expected], outs)
    assert BANK_MIN_SYMBOLS > 1


def test_the_bank_takes_and_gives_back_the_per_event_state(market):
    features = SymbolFeatures()
    symbol = [b for b in market if b.symbol == "SYN00003"]
    for b in symbol[:300]:
        features.update_row(b.open, b.high, b.low, b.close, b.volume, 20.0, False, "normal")
    bank = FeatureBank(capacity=1)
    slot = bank.add("SYN00003", features)
    back = bank.export(slot)
    for name in SymbolFeatures.__slots__:
        mine, theirs = getattr(back, name), getattr(features, name)
        assert list(mine) == list(theirs) if hasattr(mine, "__iter__") else mine == theirs, name
    bank.add("SYN00004", features)  # a second symbol: the arrays grow
    assert bank.capacity >= 2
    assert bank.export(slot)._c == features._c
