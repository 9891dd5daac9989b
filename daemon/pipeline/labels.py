"""Delayed labels: what did the next `horizon_bars` (H) bars do? (`label.target`)

- `direction`: 1 when log(close[t+H] / close[t]) > `label.threshold`.
- `volatility`: 1 when the realised volatility of the next H bars is above that of the previous
  W = `label.volatility_window` bars. Realised volatility is the root mean square of the 1-bar
  log returns, so windows of different lengths compare: the next H returns (close[t] to
  close[t+H]) against the W returns that end at close[t]. A bar with fewer than W returns before
  it (the first W bars of a symbol) never gets a label.
- `drawdown`: 1 when the lowest close of bars t+1 .. t+H is at most close[t] x (1 -
  `label.drawdown_threshold`).

Until bar t+H arrives the row is pending. Three paths compute labels and agree bit for bit:
the batch path (`future_labels`) over a whole close series, the per-event path
(`SymbolLabels`, which keeps the last closes of one symbol) and the engine's bank, which reads
the closes from its ring. Direction uses `label_of` per event and the bank; the other targets
use `window_labels` in every path, where each log return is `math.log` of one ratio and each
mean sums its terms left to right, so no path rounds differently.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from daemon.config import LabelConfig
from daemon.pipeline.features.batch import log_each

__all__ = [
    "Matured",
    "SymbolLabels",
    "future_labels",
    "label_back",
    "label_of",
    "window_labels",
]

Floats = npt.NDArray[np.float64]


def label_of(config: LabelConfig, close_now: float, close_later: float) -> int:
    """1 when the log return from `close_now` to `close_later` exceeds the threshold."""
    return int(math.log(close_later / close_now) > config.threshold)


def label_back(config: LabelConfig) -> int:
    """How many closes before the newest one a label needs: H, plus W for `volatility`."""
    extra = config.volatility_window if config.target == "volatility" else 0
    return config.horizon_bars + extra


def window_labels(config: LabelConfig, windows: Floats) -> npt.NDArray[np.int64]:
    """The labels of rows of closes, each close[t - back] .. close[t + H] oldest first (back is
    W for `volatility`, else 0): one label per row."""
    h = config.horizon_bars
    if config.target == "drawdown":
        low: Floats = windows[:, -h:].min(axis=1)
        floor: Floats = windows[:, -h - 1] * (1.0 - config.drawdown_threshold)
        return (low <= floor).astype(np.int64)
    if config.target == "volatility":
        shape = (windows.shape[0], windows.shape[1] - 1)
        returns = log_each((windows[:, 1:] / windows[:, :-1]).ravel()).reshape(shape)
        return _rising(returns * returns, config.volatility_window, h)
    return (log_each(windows[:, -1] / windows[:, 0]) > config.threshold).astype(np.int64)


def _rising(squares: Floats, w: int, h: int) -> npt.NDArray[np.int64]:
    """Rows of W + H squared log returns: 1 where the mean of the last H is above the mean of
    the first W (the root mean squares compare the same way). Sums run left to right."""
    past = squares[:, 0].copy()
    for j in range(1, w):
        past += squares[:, j]
    future = squares[:, w].copy()
    for j in range(w + 1, w + h):
        future += squares[:, j]
    return (future / h > past / w).astype(np.int64)


def future_labels(config: LabelConfig, close: pd.Series) -> pd.Series:
    """Batch path: the label of every bar, <NA> where it is unknown (the last `horizon_bars`,
    still pending, and for `volatility` the first `volatility_window`)."""
    values = close.to_numpy(dtype=float)
    h = config.horizon_bars
    n = len(values)
    out = pd.array([pd.NA] * n, dtype="Int64")
    if config.target == "direction":
        if n > h:
            ret = np.log(values[h:] / values[:-h])
            out[: n - h] = (ret > config.threshold).astype(np.int64)
    elif config.target == "drawdown":
        if n > h:
            out[: n - h] = window_labels(config, sliding_window_view(values, h + 1))
    else:
        w = config.volatility_window
        if n > w + h:
            returns = log_each(values[1:] / values[:-1])
            squares = sliding_window_view(returns * returns, w + h)
            out[w : n - h] = _rising(squares, w, h)
    return pd.Series(out, index=close.index, name="label")


@dataclass(frozen=True)
class Matured:
    """A label that became known: the bar `ts` of the symbol now has `label`."""

    ts: str
    label: int


class SymbolLabels:
    """Per-event path: the days of one symbol waiting for their future (`waiting`) and the
    closes their labels need (`closes`, the last `label_back` + 1)."""

    def __init__(self, config: LabelConfig) -> None:
        self.config = config
        self.waiting: deque[str] = deque()
        self.closes: deque[float] = deque(maxlen=label_back(config) + 1)

    def update(self, ts: str, close: float) -> Matured | None:
        """Record bar `ts`; return the label of the bar `horizon_bars` earlier, if it has one."""
        self.waiting.append(ts)
        self.closes.append(close)
        if len(self.waiting) <= self.config.horizon_bars:
            return None
        old_ts = self.waiting.popleft()
        closes = self.closes
        if self.config.target == "direction":
            return Matured(old_ts, label_of(self.config, closes[0], close))
        if len(closes) < label_back(self.config) + 1:
            return None  # a `volatility` bar without W returns before it
        return Matured(old_ts, int(window_labels(self.config, np.array([closes]))[0]))

    def restore(self, days: list[str], closes: list[float]) -> None:
        """The state after a symbol's stored bars (`days` and their `closes`, oldest first)."""
        self.waiting.clear()
        self.waiting.extend(days[max(0, len(days) - self.config.horizon_bars) :])
        self.closes.clear()
        self.closes.extend(closes)
