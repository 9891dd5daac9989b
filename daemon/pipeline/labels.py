"""Delayed labels: did the price go up over the next `horizon_bars` bars?

A row at bar t gets label 1 when log(close[t+H] / close[t]) > threshold, else 0. Until bar t+H
arrives the row is pending. The per-event path keeps the last H closes of each symbol; the batch
path shifts the close series. Both use `label_of`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from daemon.config import LabelConfig


def label_of(config: LabelConfig, close_now: float, close_later: float) -> int:
    """1 when the log return from `close_now` to `close_later` exceeds the threshold."""
    return int(math.log(close_later / close_now) > config.threshold)


def future_labels(config: LabelConfig, close: pd.Series) -> pd.Series:
    """Batch path: the label of every bar, <NA> for the last `horizon_bars` (still pending)."""
    values = close.to_numpy(dtype=float)
    h = config.horizon_bars
    out = pd.array([pd.NA] * len(values), dtype="Int64")
    if len(values) > h:
        ret = np.log(values[h:] / values[:-h])
        out[: len(values) - h] = (ret > config.threshold).astype(np.int64)
    return pd.Series(out, index=close.index, name="label")


@dataclass(frozen=True)
class Matured:
    """A label that became known: the bar `ts` of the symbol now has `label`."""

    ts: str
    label: int


class SymbolLabels:
    """Per-event path: the last `horizon_bars` closes of one symbol, waiting for their future."""

    def __init__(self, config: LabelConfig) -> None:
        self.config = config
        self.waiting: deque[tuple[str, float]] = deque()

    def update(self, ts: str, close: float) -> Matured | None:
        """Record bar `ts`; return the label of the bar `horizon_bars` earlier, if any."""
        self.waiting.append((ts, close))
        if len(self.waiting) <= self.config.horizon_bars:
            return None
        old_ts, old_close = self.waiting.popleft()
        return Matured(old_ts, label_of(self.config, old_close, close))
