"""The feature engine: one row of scale-free numbers per bar, per event and in batch.

The model sees returns, ratios and z-scores only, never a price or volume level, so one model
serves every symbol. Two paths compute the same definitions: `SymbolFeatures` keeps per-symbol
ring buffers and running sums and does O(1) work per bar (the consumer's path);
`compute_features` computes a whole history vectorised (training, the rare-event archive).
They agree to 1e-9 on every feature of every row (in practice bit for bit);
tests/pipeline/test_features.py proves it on the bundled histories and on random bars.
docs/features.md defines every feature, its window and why it is there.

How the paths stay in step: a windowed sum is a running sum `S += x_new - x_old` in the
per-event path and the cumulative sum of the same differences in the batch path, the same
floating-point additions in the same order, so the sums are equal bit for bit and so is every
decision taken on them (a flat window, a zero range). The 20-bar close and volume sums run on
deviations from an anchor that is reset every 20 bars, so a price that fell a hundredfold does
not leave rounding noise in today's Bollinger band. Logarithms are `math.log` in both paths. The
recursive averages (EMA, Wilder) are seeded with the mean of their first n inputs in both.

A row is emitted only when every feature is defined from real history: after the warm-up
(`warmup_bars()`), with a regime, and with 20 consecutive known VIX readings.

`SymbolFeatures.restore` (also `restore_features`) rebuilds the per-event state from stored
bars at once, for start-up and for a partition that moved here: the same state, bit for bit, as
feeding the bars to `update`, computed from the batch path's columns
(`daemon.pipeline.features.restore`).
"""

from __future__ import annotations

from daemon.pipeline.features.batch import compute_features, features_from_labels
from daemon.pipeline.features.defs import FEATURE_NAMES, FEATURE_VERSION, warmup_bars
from daemon.pipeline.features.event import SymbolFeatures

#: `SymbolFeatures.restore` as a function: the per-event state rebuilt from stored bars.
restore_features = SymbolFeatures.restore

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "SymbolFeatures",
    "compute_features",
    "features_from_labels",
    "restore_features",
    "warmup_bars",
]
