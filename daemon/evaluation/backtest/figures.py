"""The figures of one strategy over a run of bars, and block-bootstrap intervals of its Sharpe
and maximum-drawdown differences against buy-and-hold.

Daily figures are annualised with 252 bars a year; CAGR uses calendar time, from the close the
first exposure was decided at to the last bar's close. Sharpe and Sortino are in excess of the
risk-free rate; the maximum drawdown is the deepest fall of the equity curve from its running
peak (the start counts as a peak), on closes.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from daemon.evaluation.backtest.ledger import TRADING_DAYS, Floats, Ledger
from daemon.evaluation.backtest.results import DrawdownResult
from daemon.training.scoring import Resampler

__all__ = ["Figures", "Resamples", "drawdown", "figures", "sharpe"]


@dataclass(frozen=True)
class Figures:
    """What a strategy did over a run of bars."""

    bars: int
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


def _excess(net: Floats, risk_free: float) -> Floats:
    return np.asarray(net - risk_free / TRADING_DAYS, dtype=np.float64)


def sharpe(net: Floats, risk_free: float = 0.0) -> float | None:
    """The annualised Sharpe ratio of daily returns; None when they do not vary."""
    if len(net) < 2:
        return None
    x = _excess(net, risk_free)
    sd = float(np.std(x, ddof=1))
    return None if sd <= 1e-15 else float(np.mean(x)) / sd * math.sqrt(TRADING_DAYS)


def _sortino(net: Floats, risk_free: float) -> float | None:
    x = _excess(net, risk_free)
    downside = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2))) if len(x) else 0.0
    return None if downside <= 1e-15 else float(np.mean(x)) / downside * math.sqrt(TRADING_DAYS)


def drawdown(net: Floats, days: list[str], start: str) -> DrawdownResult:
    """The maximum drawdown of the equity grown by `net` from 1 at the close of `start`
    (depth, negative), the peak's and the trough's day and the first day back at the peak
    (None: not recovered by the end); `days` are the bars' days."""
    equity = np.concatenate([[1.0], np.cumprod(1.0 + net)])
    peaks = np.maximum.accumulate(equity)
    falls = equity / peaks - 1.0
    trough = int(np.argmin(falls))
    depth = float(falls[trough])
    labels = [start, *days]
    if depth >= 0.0:
        return {"depth": 0.0, "peak": start, "trough": start, "recovered": None}
    peak = int(np.flatnonzero(equity[: trough + 1] >= peaks[trough])[0])
    back = np.flatnonzero(equity[trough:] >= peaks[trough])
    recovered = labels[trough + int(back[0])] if len(back) else None
    return {"depth": depth, "peak": labels[peak], "trough": labels[trough], "recovered": recovered}


def figures(book: Ledger, days: list[str], start: str, risk_free: float = 0.0) -> Figures:
    """The figures of `book` whose bars are `days`; `start` is the day of the close the first
    exposure was decided at."""
    net = book.net
    n = len(net)
    total = float(np.prod(1.0 + net)) - 1.0 if n else 0.0
    span = dt.date.fromisoformat(days[-1]) - dt.date.fromisoformat(start) if n else dt.timedelta()
    years = span.days / 365.25
    cagr = (1.0 + total) ** (1.0 / years) - 1.0 if years > 0 and total > -1.0 else None
    vol = float(np.std(net, ddof=1)) * math.sqrt(TRADING_DAYS) if n > 1 else None
    dd = drawdown(net, days, start)
    calmar = None if cagr is None or dd["depth"] >= 0.0 else cagr / -dd["depth"]
    turnover = float(book.turnover.sum())
    return Figures(
        bars=n,
        total_return=total,
        cagr=cagr,
        volatility=vol,
        sharpe=sharpe(net, risk_free),
        sortino=_sortino(net, risk_free) if n > 1 else None,
        max_drawdown=dd,
        calmar=calmar,
        turnover=turnover,
        annual_turnover=turnover / years if years > 0 else None,
        costs=float(book.costs.sum()),
        time_in_market=float(np.mean(book.held > 0.0)) if n else 0.0,
        mean_exposure=float(np.mean(book.held)) if n else 0.0,
    )


class Resamples:
    """Moving-block bootstrap resamples of a run of bars: each resample strings together
    blocks of `block_days` consecutive bars drawn at random (so volatility clusters and runs of
    losses stay together) until it is as long as the run. Every strategy is resampled on the
    same bars, so its difference to buy-and-hold is a paired difference. Seeded."""

    def __init__(self, n: int, n_resamples: int, block_days: int, seed: int) -> None:
        self.index = np.empty((0, n), dtype=np.intp)
        if n < 2 or n_resamples <= 0:
            return
        length = min(block_days, n)
        blocks = -(-n // length)
        rng = np.random.default_rng(seed)
        starts = rng.integers(0, n - length + 1, size=(n_resamples, blocks))
        picked = (starts[:, :, None] + np.arange(length)).reshape(n_resamples, -1)
        self.index = picked[:, :n]

    def _sharpe(self, net: Floats, risk_free: float) -> Floats:
        x = _excess(net, risk_free)[self.index]
        sd = np.std(x, axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.mean(x, axis=1) / sd * math.sqrt(TRADING_DAYS)
        return np.asarray(np.where(sd > 1e-15, out, np.nan), dtype=np.float64)

    def _depth(self, net: Floats) -> Floats:
        out = np.empty(len(self.index))
        chunk = max(1, 2_000_000 // max(1, self.index.shape[1]))
        for lo in range(0, len(self.index), chunk):
            equity = np.cumprod(1.0 + net[self.index[lo : lo + chunk]], axis=1)
            peaks = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)
            out[lo : lo + chunk] = np.minimum((equity / peaks - 1.0).min(axis=1), 0.0)
        return out

    def intervals(
        self, net: Floats, reference: Floats, risk_free: float
    ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """95% intervals of Sharpe(net) - Sharpe(reference) and of maxDD(net) -
        maxDD(reference) (positive: a shallower drawdown); None without resamples."""
        if not len(self.index):
            return None, None
        sharpe_diff = self._sharpe(net, risk_free) - self._sharpe(reference, risk_free)
        depth_diff = self._depth(net) - self._depth(reference)
        return Resampler.interval(sharpe_diff), Resampler.interval(depth_diff)
