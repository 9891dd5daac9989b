"""What a batch of bars turns into (`Output`): the bar, sample and label rows to store and what
to count; and the small helpers that build those rows."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from daemon.domain import Bar, BarRow, LabelUpdate, RowBlock, SampleRow
from daemon.pipeline.features import FEATURE_NAMES
from daemon.pipeline.regime import RegimeLabel

__all__ = ["Output", "bar_row", "float32_row", "settle"]


@dataclass
class Output:
    """What a batch of bars turns into: rows to write and what to count."""

    bars: list[BarRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    labels: list[LabelUpdate] = field(default_factory=list)
    #: The bank's rows, as statement parameters; `block_features` holds its samples' vectors
    #: (float32 matrices, in the order of `block.samples`).
    block: RowBlock = field(default_factory=RowBlock)
    block_features: list[npt.NDArray[np.float32]] = field(default_factory=list)
    #: (symbol, ts, label) of the labels that matured for samples of this same batch: set on
    #: those samples, so the store has nothing to update (`labels` and `block.labels` hold the
    #: labels of earlier batches' samples).
    settled: list[tuple[str, str, int]] = field(default_factory=list)
    labeled: Counter[str] = field(default_factory=Counter)
    withheld: int = 0
    out_of_order: int = 0
    market: RegimeLabel | None = None

    @property
    def bar_count(self) -> int:
        return len(self.bars) + len(self.block.bars)

    def all_bars(self) -> list[BarRow]:
        """Every bar row, the block's as objects too."""
        return [*self.bars, *self.block.bar_rows()]

    def all_samples(self) -> list[SampleRow]:
        """Every sample row, the block's as objects too."""
        return [*self.samples, *self.block.sample_rows()]

    def all_labels(self) -> list[LabelUpdate]:
        """Every label update for the store, the block's as objects too."""
        return [*self.labels, *self.block.label_updates()]


def settle(out: Output) -> None:
    """Set the labels that matured for samples of this same batch on those samples, so the
    store inserts them labelled instead of updating them afterwards (`Output.settled`)."""
    if not out.labels or not out.samples:
        return
    fresh = {(s.symbol, s.ts, s.source): s for s in out.samples}
    later = []
    for update in out.labels:
        sample = fresh.get((update.symbol, update.ts, update.source))
        if sample is None:
            later.append(update)
        else:
            # A row this batch built and nothing else has seen yet: set, not copied.
            sample.__dict__["label"] = update.label
            if update.source == "live":
                out.settled.append((update.symbol, update.ts, update.label))
    out.labels = later


def bar_row(bar: Bar, ts: str, regime: str | None, vix: float | None, source: str) -> BarRow:
    """The stored row of `bar` on day `ts` with its regime, VIX and source (no checks: the
    bar was validated when it was decoded)."""
    return BarRow.unchecked(
        bar.symbol, ts, bar.open, bar.high, bar.low, bar.close, bar.volume, regime, vix, source
    )


_pack_float32 = struct.Struct(f"<{len(FEATURE_NAMES)}f").pack


def float32_row(row: list[float]) -> npt.NDArray[np.float32]:
    """A feature row as the read-only float32 vector a `SampleRow` holds, rounded exactly as
    `SampleRow` rounds (a C cast to float)."""
    try:
        return np.frombuffer(_pack_float32(*row), dtype="<f4")  # bytes: read-only
    except OverflowError:  # a value beyond float32: numpy makes it infinite, as SampleRow does
        vector = np.array(np.array(row, dtype=np.float64), dtype=np.float32)
        vector.flags.writeable = False
        return vector
