"""`backtest`: the strategies of `regimed backtest` side by side on a history, from the bars
and the walk-forward models' predictions to the results document and the report's series.

The models are those of `regimed evaluate`, through its own functions: the same dataset, folds,
variants and fits (`daemon.evaluation.data`, `daemon.evaluation.walk.run_folds`). Every
strategy trades each symbol over the same bars: from the close of the first test day (the first
fold's cutoff) to the bar after the last test day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from daemon.config import ArchiveEvent, Config, LabelTarget
from daemon.errors import UsageError
from daemon.evaluation.backtest.figures import Figures, Resamples, figures
from daemon.evaluation.backtest.ledger import Floats, Ledger, ledger
from daemon.evaluation.backtest.results import (
    BacktestDocument,
    BacktestSettings,
    PeriodResult,
    StrategyResult,
    SymbolResult,
    SymbolSeries,
)
from daemon.evaluation.backtest.strategies import (
    TARGETS,
    model_exposure,
    model_volatility,
    regime_exposure,
    trailing_volatility,
    volatility_exposure,
)
from daemon.evaluation.data import Dataset, build_dataset, folds, load_default
from daemon.evaluation.walk import VARIANTS, Predictions, Progress, run_folds
from daemon.pipeline.regime import label_history
from daemon.training.archive import Histories

__all__ = ["BUY_AND_HOLD", "Backtest", "backtest", "strategy_names", "symbol_backtest"]

BUY_AND_HOLD = "buy_and_hold"
_MODEL = "model_"


#: What a model's call of each target means for its exposure, in words.
_CALLS = {
    "direction": "long when they predict up (P(up) > 0.5)",
    "volatility": "out (or at backtest.reduced_exposure) when they predict rising volatility",
    "drawdown": "out (or at backtest.reduced_exposure) when they predict a drawdown",
}


def strategy_names(target: str = "direction") -> dict[str, str]:
    """Each strategy's name and what it does, in the order of the tables."""
    names = {
        BUY_AND_HOLD: "fully exposed throughout",
        "regimes": "out (or at backtest.reduced_exposure) while the regime known at the close "
        "is crash or high_volatility",
    }
    for v in VARIANTS:
        names[_MODEL + v.name] = f"the walk-forward `{v.name}` models: {_CALLS[target]}"
    names["volatility_target"] = (
        "backtest.target_volatility / the trailing realised volatility, capped at 1"
    )
    if target == "volatility":
        names["volatility_target_model"] = (
            "the same with the `all` models' forecast: the trailing volatility times "
            "backtest.rising_volatility_factor where they predict rising volatility, times "
            "backtest.falling_volatility_factor elsewhere"
        )
    return names


@dataclass(frozen=True)
class Backtest:
    """The results document and, per symbol, the series the report draws."""

    doc: BacktestDocument
    series: dict[str, SymbolSeries]


def backtest(
    config: Config,
    histories: Histories | None = None,
    *,
    target: str | None = None,
    cost_bps: float | None = None,
    end: dt.date | None = None,
    progress: Progress | None = None,
) -> Backtest:
    """Walk forward as `regimed evaluate` does (`[evaluate]`: start, step, models) over
    `histories` (default: the bundled history), then trade every symbol with each strategy.

    Raises UsageError for a target without an exposure rule and when no fold has a test bar.
    """
    target = target or config.label.target
    if target not in TARGETS:
        raise UsageError(f"target {target!r}: expected one of {', '.join(TARGETS)}")
    chosen = cast("LabelTarget", target)  # one of TARGETS, the label targets
    config = config.replace(label=dataclasses.replace(config.label, target=chosen))
    started = time.perf_counter()
    histories = histories or load_default()
    # The shuffled-label control is no strategy: one fold of it is the least run_folds fits.
    walk = dataclasses.replace(config.evaluate, control_folds=1)
    data = build_dataset(config, histories)
    plan = folds(data, config, walk, end)
    if not plan:
        raise UsageError(
            f"evaluate.start = {walk.start}: no test bar from it to {end or data.days.max()}"
        )
    predictions = run_folds(data, plan, config, walk, progress)
    bt = config.backtest
    cost = bt.cost_bps if cost_bps is None else cost_bps
    symbols: dict[str, SymbolResult] = {}
    series: dict[str, SymbolSeries] = {}
    for symbol, frame in histories.bars.items():
        calls = _calls(data, predictions, symbol)
        if calls is None:
            continue
        days, preds = calls
        symbols[symbol], series[symbol] = symbol_backtest(
            config, frame, histories.vix, days, preds, cost / 10_000
        )
    settings: BacktestSettings = {
        "target": config.label.key,
        "cost_bps": cost,
        "risk_free": bt.risk_free,
        "reduced_exposure": bt.reduced_exposure,
        "target_volatility": bt.target_volatility,
        "volatility_window_bars": bt.volatility_window_bars,
        "bootstrap_samples": bt.bootstrap_samples,
        "block_days": bt.block_days,
        "seed": bt.seed,
        "start": walk.start.isoformat(),
        "end": None if end is None else end.isoformat(),
        "step": walk.step,
        "models": list(walk.models),
        "horizon_bars": config.label.horizon_bars,
    }
    doc: BacktestDocument = {
        "data": {
            "source": histories.where,
            "symbols": sorted(symbols),
            "first_day": min(s["overall"]["start_close"] for s in symbols.values()),
            "last_day": max(s["overall"]["last_day"] for s in symbols.values()),
            "vix": None
            if histories.vix is None
            else [str(histories.vix.index[0].date()), str(histories.vix.index[-1].date())],
        },
        "settings": settings,
        "strategies": strategy_names(target),
        "symbols": symbols,
        "folds": predictions.folds,
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    return Backtest(doc, series)


def _calls(
    data: Dataset, predictions: Predictions, symbol: str
) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]] | None:
    """A symbol's test days in order and each variant's prediction on them."""
    mine = data.symbols[predictions.rows] == symbol
    if not mine.any():
        return None
    days = data.days[predictions.rows][mine]
    order = np.argsort(days, kind="stable")
    preds = {v.name: predictions.preds[v.name][mine][order] for v in VARIANTS}
    return pd.DatetimeIndex(days[order]), preds


def symbol_backtest(
    config: Config,
    bars: pd.DataFrame,
    vix: pd.Series | None,
    days: pd.DatetimeIndex,
    preds: Mapping[str, np.ndarray],
    cost: float,
) -> tuple[SymbolResult, SymbolSeries]:
    """Every strategy on one symbol's `bars`, deciding at the close of each of `days` (its test
    days, where the models' predictions `preds` stand) and trading the next bar; `cost` per
    unit of turnover as a fraction."""
    bt = config.backtest
    calendar = pd.DatetimeIndex(bars.index)
    at = calendar.get_indexer(days)
    if (at < 0).any():
        raise UsageError(f"{days[at < 0][0].date()}: a prediction for a day without a bar")
    first, last = int(at.min()), min(int(at.max()) + 1, len(calendar) - 1)
    if last <= first:
        raise UsageError(f"{days[0].date()}: no bar after the test days to trade")
    closes = bars["close"].to_numpy(dtype=np.float64)
    regimes = label_history(config.regime, bars["close"], vix)["regime"].to_numpy()
    window = slice(first, last + 1)
    exposures: dict[str, Floats] = {
        BUY_AND_HOLD: np.ones(last + 1 - first),
        "regimes": regime_exposure(regimes[window], bt.reduced_exposure),
    }
    target = config.label.target
    for name, pred in preds.items():
        exposures[_MODEL + name] = _carried(
            at - first, model_exposure(target, pred, bt.reduced_exposure), last + 1 - first
        )
    forecast = trailing_volatility(closes, bt.volatility_window_bars)[window]
    exposures["volatility_target"] = volatility_exposure(forecast, bt.target_volatility)
    if target == "volatility":
        rising = _carried(at - first, preds["all"].astype(np.float64), last + 1 - first)
        scaled = model_volatility(
            forecast, rising, bt.rising_volatility_factor, bt.falling_volatility_factor
        )
        exposures["volatility_target_model"] = volatility_exposure(scaled, bt.target_volatility)
    books = {name: ledger(closes[window], e, cost, bt.risk_free) for name, e in exposures.items()}
    labels = [d.strftime("%Y-%m-%d") for d in calendar[window]]
    overall = _period(config, "overall", None, books, labels, slice(0, len(labels) - 1))
    events = []
    for event in config.archive.events:
        bars_in = _inside(labels[1:], event)
        if bars_in is not None:
            events.append(_period(config, event.name, event, books, labels, bars_in))
    series = SymbolSeries(
        days=labels,
        regimes=[str(r) if r is not None else "" for r in regimes[window]],
        equity={n: np.concatenate([[1.0], np.cumprod(1.0 + b.net)]) for n, b in books.items()},
        held={n: b.held for n, b in books.items()},
    )
    return {"overall": overall, "events": events}, series


def _carried(positions: np.ndarray, values: Floats, n: int) -> Floats:
    """`values` at `positions` of n bars, each carried forward over the bars without one
    (none in a walk-forward's contiguous test days; the position 0 always has one)."""
    out = np.full(n, np.nan)
    out[positions] = values
    known = np.where(np.isfinite(out), np.arange(n), 0)
    return np.asarray(out[np.maximum.accumulate(known)], dtype=np.float64)


def _inside(days: list[str], event: ArchiveEvent) -> slice | None:
    """The bars (positions in `days`) inside the event's window; None when there are none."""
    lo = int(np.searchsorted(days, event.start.isoformat(), side="left"))
    hi = int(np.searchsorted(days, event.end.isoformat(), side="right"))
    return slice(lo, hi) if hi > lo else None


def _period(
    config: Config,
    name: str,
    event: ArchiveEvent | None,
    books: Mapping[str, Ledger],
    labels: list[str],
    bars: slice,
) -> PeriodResult:
    """Every strategy's figures over `bars` (positions among the traded bars, whose days are
    `labels[1:]`; `labels[0]` is the first decision's close)."""
    bt = config.backtest
    days = labels[1:][bars]
    start = labels[bars.start or 0]
    parts = {n: b.part(bars) for n, b in books.items()}
    resamples = Resamples(len(days), bt.bootstrap_samples, bt.block_days, bt.seed)
    reference = parts[BUY_AND_HOLD]
    base = figures(reference, days, start, bt.risk_free)
    out: dict[str, StrategyResult] = {}
    for n, part in parts.items():
        f = figures(part, days, start, bt.risk_free)
        if n == BUY_AND_HOLD:
            out[n] = _result(f, base, None)
        else:
            out[n] = _result(f, base, resamples.intervals(part.net, reference.net, bt.risk_free))
    return {
        "name": name,
        "start": None if event is None else event.start.isoformat(),
        "end": None if event is None else event.end.isoformat(),
        "start_close": start,
        "first_day": days[0],
        "last_day": days[-1],
        "bars": len(days),
        "strategies": out,
    }


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _ci(found: tuple[float, float] | None) -> list[float] | None:
    return None if found is None else [round(found[0], 4), round(found[1], 4)]


def _result(
    f: Figures,
    base: Figures,
    intervals: tuple[tuple[float, float] | None, tuple[float, float] | None] | None,
) -> StrategyResult:
    dd = f.max_drawdown
    sharpe_diff = (
        None
        if intervals is None or f.sharpe is None or base.sharpe is None
        else f.sharpe - base.sharpe
    )
    depth_diff = None if intervals is None else dd["depth"] - base.max_drawdown["depth"]
    return {
        "total_return": round(f.total_return, 4),
        "cagr": _r(f.cagr),
        "volatility": _r(f.volatility),
        "sharpe": _r(f.sharpe, 3),
        "sortino": _r(f.sortino, 3),
        "max_drawdown": {**dd, "depth": round(dd["depth"], 4)},
        "calmar": _r(f.calmar, 3),
        "turnover": round(f.turnover, 2),
        "annual_turnover": _r(f.annual_turnover, 2),
        "costs": round(f.costs, 5),
        "time_in_market": round(f.time_in_market, 4),
        "mean_exposure": round(f.mean_exposure, 4),
        "sharpe_difference": _r(sharpe_diff, 3),
        "sharpe_difference_ci95": None if intervals is None else _ci(intervals[0]),
        "max_drawdown_difference": _r(depth_diff),
        "max_drawdown_difference_ci95": None if intervals is None else _ci(intervals[1]),
    }
