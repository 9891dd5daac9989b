"""Bars without Kafka: the sources a replay, the archive and the evaluation read.

The bundled real history (S&P 500 as ^GSPC, NASDAQ as ^IXIC, VIX as ^VIX), a CSV file of one
symbol, N synthetic regime-switching symbols for load tests, or Yahoo Finance through yfinance.
Each gives `Bar`s in time order; on each day the VIX bar goes first, so the streaming labeler
sees the day's VIX before the day's other bars, exactly like the batch path.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import Bar
from daemon.errors import ReplayError

__all__ = [
    "BUNDLED_SYMBOLS",
    "bundled_events",
    "csv_events",
    "frame_events",
    "in_time_order",
    "synthetic_events",
    "vix_events",
    "yahoo_events",
    "yahoo_frames",
]

#: The bundled histories by file name, and the symbols they stand for.
BUNDLED_SYMBOLS = {"sp500": "^GSPC", "nasdaq": "^IXIC"}


def frame_events(symbol: str, bars: pd.DataFrame) -> list[Bar]:
    """Events of one symbol from a frame with open, high, low, close, volume by day."""
    days = pd.DatetimeIndex(bars.index)
    cols = [bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")]
    return [
        Bar(symbol, day.date(), o, h, lo, c, v)
        for day, o, h, lo, c, v in zip(days, *cols, strict=True)
    ]


def vix_events(symbol: str, vix: pd.Series) -> list[Bar]:
    """VIX closes as bars (open = high = low = close, volume 0)."""
    return [
        Bar(symbol, day.date(), float(v), float(v), float(v), float(v), 0.0)
        for day, v in zip(pd.DatetimeIndex(vix.index), vix.to_numpy(dtype=float), strict=True)
    ]


def in_time_order(events: Iterable[Bar], vix_symbol: str = "^VIX") -> list[Bar]:
    """Sort by day; within a day the VIX first, then symbols alphabetically."""
    return sorted(events, key=lambda e: (e.day, e.symbol != vix_symbol, e.symbol))


def bundled_events(vix_symbol: str = "^VIX") -> list[Bar]:
    """The bundled S&P 500 (^GSPC), NASDAQ (^IXIC) and VIX history, in time order."""
    events: list[Bar] = []
    for name, symbol in BUNDLED_SYMBOLS.items():
        events.extend(frame_events(symbol, read_bars_csv(bundled_path(name))))
    events.extend(vix_events(vix_symbol, read_vix_csv(bundled_path("vix"))))
    return in_time_order(events, vix_symbol)


def csv_events(path: str, symbol: str) -> list[Bar]:
    """Bars of one symbol from a yfinance or plain Date/OHLCV CSV."""
    return frame_events(symbol, read_bars_csv(path))


@dataclass(frozen=True)
class Phase:
    """A synthetic market phase: daily drift and volatility of log returns, VIX level."""

    name: str
    drift: float
    vol: float
    vix: float


PHASES = (
    Phase("calm", 0.0005, 0.006, 12.0),
    Phase("volatile", -0.0005, 0.018, 28.0),
    Phase("crash", -0.02, 0.04, 48.0),
)
# Daily transition probabilities between calm, volatile and crash phases.
TRANSITIONS = np.array([[0.985, 0.014, 0.001], [0.03, 0.95, 0.02], [0.02, 0.13, 0.85]])


def synthetic_events(
    n_symbols: int,
    n_days: int = 1000,
    seed: int = 0,
    start: dt.date = dt.date(2000, 1, 3),
    vix_symbol: str = "^VIX",
) -> Iterator[Bar]:
    """N symbols of regime-switching prices (calm, volatile and crash phases) plus a VIX that
    follows the shared market phase, day by day in time order, generated lazily."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range(start, periods=n_days)
    phase = np.zeros(n_days, dtype=np.int64)
    for t in range(1, n_days):
        phase[t] = rng.choice(3, p=TRANSITIONS[phase[t - 1]])
    drift = np.array([p.drift for p in PHASES])[phase]
    vol = np.array([p.vol for p in PHASES])[phase]
    vix_level = np.array([p.vix for p in PHASES])[phase] * np.exp(rng.normal(0, 0.08, n_days))
    beta = rng.uniform(0.6, 1.4, n_symbols)
    price = rng.uniform(20, 500, n_symbols)
    names = [f"SYN{i:05d}" for i in range(n_symbols)]
    for t, day in enumerate(days):
        date = day.date()
        v = float(vix_level[t])
        yield Bar(vix_symbol, date, v, v, v, v, 0.0)
        shocks = drift[t] * beta + vol[t] * beta * rng.standard_normal(n_symbols)
        opens = price * np.exp(rng.normal(0, vol[t] / 4, n_symbols))
        closes = price * np.exp(shocks)
        spread = np.abs(rng.normal(0, vol[t] / 2, (2, n_symbols)))
        highs = np.maximum(opens, closes) * np.exp(spread[0])
        lows = np.minimum(opens, closes) * np.exp(-spread[1])
        volumes = rng.lognormal(13, 0.5, n_symbols) * (1 + 3 * (phase[t] == 2))
        for i, name in enumerate(names):
            yield Bar(
                name,
                date,
                float(opens[i]),
                float(highs[i]),
                float(lows[i]),
                float(closes[i]),
                float(np.round(volumes[i])),
            )
        price = closes


def yahoo_frames(data: pd.DataFrame, symbols: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Split a `yfinance.download(..., group_by="ticker")` frame into per-symbol OHLCV frames.

    Accepts both column layouts yfinance produces (ticker or price on the first level) and a
    single-level frame for one symbol. Days a symbol did not trade (all NaN) are dropped.
    """
    out: dict[str, pd.DataFrame] = {}
    for symbol in symbols:
        if isinstance(data.columns, pd.MultiIndex):
            level = 0 if symbol in data.columns.get_level_values(0) else 1
            if symbol not in data.columns.get_level_values(level):
                raise ReplayError(f"yfinance returned no columns for {symbol}")
            frame = pd.DataFrame(data.xs(symbol, axis=1, level=level))
        else:
            frame = data
        frame = frame.rename(columns=lambda c: str(c).lower())
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in frame]
        if missing:
            raise ReplayError(f"yfinance data for {symbol} lacks columns {', '.join(missing)}")
        frame = frame[["open", "high", "low", "close", "volume"]].dropna(how="all")
        if frame.empty:
            raise ReplayError(f"yfinance returned no bars for {symbol}")
        if frame.isna().to_numpy().any():
            day = frame.index[frame.isna().any(axis=1)][0]
            raise ReplayError(f"yfinance data for {symbol} has a gap in a bar on {day:%Y-%m-%d}")
        index = pd.DatetimeIndex(frame.index)
        if index.tz is not None:
            index = index.tz_localize(None)
        out[symbol] = frame.set_axis(index.normalize(), axis=0)
    return out


def yahoo_events(
    symbols: Sequence[str], start: str, end: str | None, vix_symbol: str = "^VIX"
) -> list[Bar]:
    """Download daily bars from Yahoo Finance with yfinance (needs network)."""
    import yfinance

    try:
        with warnings.catch_warnings():
            # yfinance's own use of deprecated pandas arguments is not the user's problem.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="yfinance")
            warnings.filterwarnings("ignore", category=FutureWarning, module="yfinance")
            data = yfinance.download(
                list(symbols),
                start=start,
                end=end,
                interval="1d",
                group_by="ticker",
                auto_adjust=True,
                progress=False,
                threads=False,
            )
    except Exception as exc:  # yfinance raises many types for network failures
        raise ReplayError(f"yfinance download of {', '.join(symbols)} failed: {exc}") from exc
    if data is None or data.empty:
        raise ReplayError(
            f"yfinance returned no data for {', '.join(symbols)} from {start} to {end or 'today'}"
            " (is Yahoo Finance reachable from this machine?)"
        )
    frames = yahoo_frames(data, symbols)
    events: list[Bar] = []
    for symbol, frame in frames.items():
        events.extend(frame_events(symbol, frame))
    return in_time_order(events, vix_symbol)
