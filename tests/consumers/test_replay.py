from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from consumers.events import decode_event
from consumers.replay import (
    bundled_events,
    in_time_order,
    synthetic_events,
    yahoo_events,
    yahoo_frames,
)
from daemon.config import RegimeConfig
from daemon.errors import ReplayError
from daemon.pipeline.regime import label_history

NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)


def yfinance_frame(bars: pd.DataFrame, symbols: list[str], group_by: str) -> pd.DataFrame:
    """The frame `yfinance.download(symbols, group_by=...)` returns, built the way yfinance's
    multi.py builds it (concat with keys, names Ticker/Price; swapped for group_by='column')."""
    frames = {}
    for i, symbol in enumerate(symbols):
        df = (bars * (1 + i)).rename(columns=str.title)[["Open", "High", "Low", "Close", "Volume"]]
        df.index = pd.DatetimeIndex(df.index, name="Date")
        frames[symbol] = df
    data = pd.concat(
        frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"]
    )
    if group_by == "column":
        data.columns = data.columns.swaplevel(0, 1)
        data = data.sort_index(level=0, axis=1)
    return data


@pytest.mark.parametrize("group_by", ["ticker", "column"])
def test_yahoo_frames_parse_both_yfinance_layouts(sp500, group_by):
    bars = sp500.iloc[:30]
    data = yfinance_frame(bars, ["SPY", "QQQ"], group_by)
    frames = yahoo_frames(data, ["SPY", "QQQ"])
    pd.testing.assert_frame_equal(frames["SPY"], bars, check_freq=False, check_names=False)
    np.testing.assert_allclose(frames["QQQ"]["close"], bars["close"] * 2)


def test_yahoo_frames_drop_days_a_symbol_did_not_trade_and_strip_time_zones(sp500):
    bars = sp500.iloc[:5].copy()
    data = yfinance_frame(bars, ["SPY"], "ticker")
    data.iloc[2] = np.nan
    data.index = data.index.tz_localize("America/New_York")
    frames = yahoo_frames(data, ["SPY"])
    assert len(frames["SPY"]) == 4
    assert frames["SPY"].index.tz is None


def test_yahoo_frames_name_what_is_missing(sp500):
    data = yfinance_frame(sp500.iloc[:5], ["SPY"], "ticker")
    with pytest.raises(ReplayError, match="no columns for QQQ"):
        yahoo_frames(data, ["QQQ"])
    partial = data.copy()
    partial.iloc[1, 0] = np.nan
    with pytest.raises(ReplayError, match="gap in a bar on"):
        yahoo_frames(partial, ["SPY"])


def test_yahoo_without_network_fails_with_a_clear_message():
    # No route to Yahoo from this machine: yfinance gives an empty frame or raises.
    with pytest.raises(ReplayError, match=r"yfinance returned no data for SPY .* reachable"):
        yahoo_events(["SPY"], "2024-01-01", "2024-02-01")


def test_bundled_events_are_valid_and_put_each_days_vix_first():
    events = bundled_events()
    assert Counter(e.symbol for e in events) == {"^GSPC": 5031, "^IXIC": 5031, "^VIX": 1259}
    days = [e.day for e in events]
    assert days == sorted(days)
    by_day: dict[dt.date, list[str]] = {}
    for e in events:
        by_day.setdefault(e.day, []).append(e.symbol)
    assert by_day[dt.date(2018, 2, 5)] == ["^VIX", "^GSPC", "^IXIC"]
    for e in events[:50]:
        assert decode_event(e.to_json(), e.symbol.encode(), now=NOW) == e


def test_synthetic_events_are_valid_and_visit_every_regime():
    events = list(synthetic_events(3, n_days=800, seed=1))
    assert len(events) == 800 * 4
    for e in events:
        assert decode_event(e.to_json(), e.symbol.encode(), now=NOW) == e
    assert in_time_order(events) == events
    first = [e for e in events if e.symbol == "SYN00000"]
    vix = [e for e in events if e.symbol == "^VIX"]
    close = pd.Series([e.close for e in first], index=pd.DatetimeIndex([e.day for e in first]))
    vix_series = pd.Series([e.close for e in vix], index=pd.DatetimeIndex([e.day for e in vix]))
    regimes = set(label_history(RegimeConfig(), close, vix_series)["regime"].dropna())
    assert {"low_volatility", "high_volatility", "crash"} <= regimes


def test_synthetic_events_are_deterministic_under_a_seed():
    a = list(synthetic_events(2, n_days=50, seed=4))
    b = list(synthetic_events(2, n_days=50, seed=4))
    c = list(synthetic_events(2, n_days=50, seed=5))
    assert a == b
    assert a != c


@pytest.mark.integration
def test_replay_command_publishes_to_a_running_broker(broker, run_cli, tmp_path):
    from kafka import KafkaConsumer

    config = tmp_path / "c.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = ["{broker.bootstrap}"]\n')
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,0.5,1.5,10\n2020-01-03,1.5,2,1,1.8,12\n"
    )
    result = run_cli(
        "replay",
        "--config",
        str(config),
        "--csv",
        str(bars),
        "--symbol",
        "ABC",
        "--topic",
        "replay-cli",
        "--quiet",
    )
    assert result.code == 0, result.err
    assert "published 2 bars to replay-cli" in result.out
    consumer = KafkaConsumer(
        "replay-cli",
        bootstrap_servers=[broker.bootstrap],
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    records = list(consumer)
    consumer.close()
    assert [r.key for r in records] == [b"ABC", b"ABC"]
    assert [decode_event(r.value, r.key, now=NOW).close for r in records] == [1.5, 1.8]


def test_replay_command_usage_errors(run_cli):
    result = run_cli("replay", "--csv", "x.csv")
    assert result.code == 2
    assert "--symbol" in result.err
    assert run_cli("replay").code == 2
