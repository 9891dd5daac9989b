"""Every `label.target` gives the same labels in the batch, per-event and bank paths, also
across a restart from the stored bars, over the bundled history."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consumers.replay import bundled_events
from daemon.cli.main import main
from daemon.config import Config, LabelConfig, load_config
from daemon.domain import Bar
from daemon.errors import ConfigError
from daemon.pipeline.engine import Output, Pipeline
from daemon.pipeline.labels import SymbolLabels, future_labels
from daemon.store.sqlite import Store
from tests.factories import columns, final

TARGETS = {
    "direction": LabelConfig(),
    "volatility": LabelConfig(target="volatility"),
    "drawdown": LabelConfig(target="drawdown"),
    "volatility_h10_w5": LabelConfig(target="volatility", horizon_bars=10, volatility_window=5),
    "drawdown_h1": LabelConfig(target="drawdown", horizon_bars=1, drawdown_threshold=0.01),
}


def per_event(config: LabelConfig, close: pd.Series) -> dict[str, int]:
    labels = SymbolLabels(config)
    out = {}
    for day, value in close.items():
        matured = labels.update(day.strftime("%Y-%m-%d"), float(value))
        if matured is not None:
            out[matured.ts] = matured.label
    return out


def known(config: LabelConfig, close: pd.Series) -> dict[str, int]:
    batch = future_labels(config, close)
    return {d.strftime("%Y-%m-%d"): int(v) for d, v in batch.dropna().items()}


@pytest.mark.parametrize("name", list(TARGETS))
def test_per_event_labels_equal_the_batch_labels(name, sp500, nasdaq):
    config = TARGETS[name]
    for history in (sp500, nasdaq):
        expected = known(config, history["close"])
        assert per_event(config, history["close"]) == expected
        unknown = config.horizon_bars
        if config.target == "volatility":
            unknown += config.volatility_window
        assert len(expected) == len(history) - unknown


def test_each_target_says_what_it_defines():
    # closes: flat, then a 10% fall, then wild swings
    close = pd.Series(
        [100.0] * 6 + [90.0] * 3 + [100.0, 80.0, 100.0, 80.0],
        index=pd.date_range("2020-01-01", periods=13),
    )
    drawdown = future_labels(LabelConfig(target="drawdown", horizon_bars=3), close)
    assert drawdown.tolist()[:6] == [0, 0, 0, 1, 1, 1]  # 90 is 10% below 100 within 3 bars
    assert drawdown.tolist()[6:9] == [0, 1, 1]  # from 90: 80 (bar 10) is 11% below
    vol = future_labels(
        LabelConfig(target="volatility", horizon_bars=2, volatility_window=3), close
    )
    assert vol.isna().tolist()[:3] == [True] * 3  # fewer than 3 returns before
    assert vol.tolist()[3:5] == [0, 1]  # flat before; the fall at bar 6 lies ahead of bar 4
    assert vol.tolist()[6] == 0  # the fall is behind, the next two bars are flat
    assert vol.tolist()[9] == 1  # swings ahead
    assert LabelConfig(target="volatility").key == "volatility:h=5:window=21"
    assert LabelConfig().key == "direction:h=5:threshold=0"
    assert LabelConfig(target="drawdown").key == "drawdown:h=5:threshold=0.05"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('target = "up"', "label.target"),
        ('target = "volatility"\nvolatility_window = 0', "label.volatility_window"),
        ('target = "drawdown"\ndrawdown_threshold = 1.5', "label.drawdown_threshold"),
    ],
)
def test_a_bad_target_or_value_is_a_config_error_naming_the_key(tmp_path: Path, capsys, text, key):
    path = tmp_path / "c.toml"
    path.write_text(f"[label]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert key in str(err.value)
    assert main(["check-config", "--config", str(path)]) == 2
    assert key in capsys.readouterr().err


def market_copies() -> list[Bar]:
    """The bundled S&P 500 and Nasdaq histories, eight copies of each under other names (so a
    poll spans enough symbols for the bank), with the VIX, in day order."""
    rows = []
    for e in bundled_events():
        copies = 1 if e.symbol == "^VIX" else 8
        for k in range(copies):
            symbol = e.symbol if e.symbol == "^VIX" else f"{e.symbol[1:]}{k}"
            rows.append(Bar(symbol, e.day, e.open, e.high, e.low, e.close, e.volume))
    return sorted(rows, key=lambda b: b.day)


def by_days(pipeline: Pipeline, bars: list[Bar], days: int = 100) -> list[Output]:
    """Polls of `days` whole days each, so every symbol has as many bars in a poll."""
    cuts = [0] + [k for k in range(1, len(bars)) if bars[k].day != bars[k - 1].day]
    outs = []
    for first, end in zip(cuts[::days], [*cuts[days::days], len(bars)], strict=True):
        out = Output()
        pipeline.process_batch(columns(bars[first:end]), out)
        outs.append(out)
    return outs


@pytest.fixture(scope="module")
def market() -> list[Bar]:
    return market_copies()


def expected_labels(config: LabelConfig, bars: list[Bar]) -> dict[tuple[str, str], int]:
    """The batch labels of every symbol's samples (the bank labels only samples' days)."""
    out = {}
    for symbol in {b.symbol for b in bars} - {"^VIX"}:
        mine = [b for b in bars if b.symbol == symbol]
        close = pd.Series([b.close for b in mine], index=pd.DatetimeIndex([b.day for b in mine]))
        out.update({(symbol, ts): v for ts, v in known(config, close).items()})
    return out


@pytest.mark.parametrize("name", ["direction", "volatility", "drawdown", "volatility_h10_w5"])
def test_bank_and_restart_labels_equal_the_batch_labels(name, market, tmp_path: Path):
    config = dataclasses.replace(Config(), label=TARGETS[name])
    half = next(
        k for k in range(len(market) // 2, len(market)) if market[k].day != market[k - 1].day
    )
    with Store(tmp_path / "s.db") as store:
        first = Pipeline(config)
        outs = by_days(first, market[:half])
        assert len(first.bank) == 16
        for out in outs:
            store.write_batch(
                bars=out.bars, samples=out.samples, labels=out.labels, block=out.block
            )
        restarted = Pipeline(config, history=lambda s: store.recent_bars(s, 1000))
        restarted.load_vix(store.bars(symbol=config.regime.vix_symbol))
        outs += by_days(restarted, market[half:])
        assert restarted.restored == 16
        assert len(restarted.bank) == 16
    _, samples, labels = final(outs)
    expected = expected_labels(config.label, market)
    got = {k: v for k, v in labels.items() if k in samples}
    assert got == {k: v for k, v in expected.items() if k in samples}
    assert len(got) > 16 * 4000
    share = np.mean(list(got.values()))
    assert 0.05 < share < 0.95 and not math.isnan(share)
