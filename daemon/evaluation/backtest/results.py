"""The backtest's results document (`regimed backtest --json`) as TypedDicts, and the daily
series its report draws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from daemon.evaluation.backtest.ledger import Floats
from daemon.evaluation.results import DataSummary, FoldSummary

__all__ = [
    "BacktestDocument",
    "BacktestSettings",
    "DrawdownResult",
    "PeriodResult",
    "StrategyResult",
    "SymbolResult",
    "SymbolSeries",
]


class DrawdownResult(TypedDict):
    depth: float
    peak: str
    trough: str
    recovered: str | None


class StrategyResult(TypedDict):
    """One strategy's figures over a period; the differences to buy-and-hold (Sharpe, and
    maximum drawdown: positive is shallower) with their 95% block-bootstrap intervals are null
    for buy-and-hold itself."""

    total_return: float
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: DrawdownResult
    calmar: float | None
    turnover: float
    annual_turnover: float | None
    costs: float
    time_in_market: float
    mean_exposure: float
    sharpe_difference: float | None
    sharpe_difference_ci95: list[float] | None
    max_drawdown_difference: float | None
    max_drawdown_difference_ci95: list[float] | None


class PeriodResult(TypedDict):
    """The whole backtest (`name` "overall") or an archive event's window (`start`..`end` as
    configured) as far as the data covers it: bars `first_day`..`last_day`, equity starting
    at 1 at the close of `start_close`."""

    name: str
    start: str | None
    end: str | None
    start_close: str
    first_day: str
    last_day: str
    bars: int
    strategies: dict[str, StrategyResult]


class SymbolResult(TypedDict):
    overall: PeriodResult
    events: list[PeriodResult]


class BacktestSettings(TypedDict):
    """The settings the backtest ran with: its own, and the walk-forward's (`[evaluate]`)."""

    target: str
    cost_bps: float
    risk_free: float
    reduced_exposure: float
    target_volatility: float
    volatility_window_bars: int
    bootstrap_samples: int
    block_days: int
    seed: int
    start: str
    end: str | None
    step: str
    models: list[str]
    horizon_bars: int


class BacktestDocument(TypedDict):
    """`regimed backtest --json`: per symbol, every strategy's figures over the whole test
    period and inside each archive event the data covers."""

    data: DataSummary
    settings: BacktestSettings
    strategies: dict[str, str]
    symbols: dict[str, SymbolResult]
    folds: list[FoldSummary]
    duration_seconds: float


@dataclass(frozen=True)
class SymbolSeries:
    """What the report draws for one symbol: the days (the first decision's close, then every
    bar), the regime known at each day's close, each strategy's equity (1 at the start) and
    the exposure it held through each bar (one fewer than the days)."""

    days: list[str]
    regimes: list[str]
    equity: dict[str, Floats]
    held: dict[str, Floats]
