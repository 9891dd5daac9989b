"""`regimed backtest`: regime- and model-driven exposure against buy-and-hold, walk-forward,
with costs (docs/backtest.md)."""

from __future__ import annotations

from daemon.evaluation.backtest.results import BacktestDocument, SymbolSeries
from daemon.evaluation.backtest.run import BUY_AND_HOLD, Backtest, backtest, strategy_names
from daemon.evaluation.backtest.strategies import TARGETS

__all__ = [
    "BUY_AND_HOLD",
    "TARGETS",
    "Backtest",
    "BacktestDocument",
    "SymbolSeries",
    "backtest",
    "strategy_names",
]
