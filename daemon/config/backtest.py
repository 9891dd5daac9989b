"""Configuration of `regimed backtest` (`[backtest]`): exposure rules, costs and figures.

Kept apart from `daemon.config` (which imports it into `Config`) so each module stays small.
The walk-forward models of the backtest use the `[evaluate]` section (the same folds, models
and variants as `regimed evaluate`); docs/backtest.md explains the method.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config.settings import bounded


@dataclass(frozen=True)
class BacktestConfig:
    """How `regimed backtest` turns regimes and predictions into exposure, and what it costs.

    - `reduced_exposure`: the exposure while a strategy is "out" (the rule in a crash or
      high-volatility regime, a model that does not predict up); 0 is all cash.
    - `cost_bps`: transaction cost in basis points per unit of turnover (a move from 0 to
      full exposure is one unit), charged on every strategy.
    - `risk_free`: the annual risk-free rate; cash earns it and Sharpe and Sortino are in
      excess of it.
    - `target_volatility`: annualised volatility the volatility-targeting strategy aims at
      (exposure = target / forecast, capped at 1).
    - `volatility_window_bars`: bars of the trailing realised volatility forecast.
    - `rising_volatility_factor`, `falling_volatility_factor`: for the volatility target, the
      model's forecast is the trailing one times the first where the model predicts rising
      volatility, times the second elsewhere (docs/backtest.md says where the defaults come
      from).
    - `bootstrap_samples`, `block_days`, `seed`: the moving-block bootstrap of the Sharpe and
      drawdown differences against buy-and-hold.
    """

    reduced_exposure: float = bounded(0.0, ge=0, le=1)
    cost_bps: float = bounded(5.0, ge=0, le=10_000)
    risk_free: float = bounded(0.0, ge=-0.05, le=0.5)
    target_volatility: float = bounded(0.15, gt=0, le=2)
    volatility_window_bars: int = bounded(21, ge=2, le=1000)
    rising_volatility_factor: float = bounded(1.25, gt=0, le=10)
    falling_volatility_factor: float = bounded(0.75, gt=0, le=10)
    bootstrap_samples: int = bounded(1000, ge=0)
    block_days: int = bounded(21, ge=1)
    seed: int = bounded(42, ge=0)
