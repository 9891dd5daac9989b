"""Drift: how far live features moved from the champion's training data, whether the champion's
live errors got worse, and when either should start a retrain.

Feature drift is a population stability index (PSI) per feature, computed *within each regime*:
the live crash rows are compared with the training crash rows, the live calm rows with the
training calm rows. Entering a crash moves every volatility feature far from the calm training
rows, but the model was trained on crash rows too (the rare-event archive sees to that), so a
regime change alone is not drift; a crash that looks unlike every training crash is.

`Reference` (daemon/training/drift_reference.py: the trainer builds it) holds, per regime,
quantile bin edges of each feature in the training rows and the training counts per bin; it is
small and JSON-serialisable, and is stored in the model's manifest. `DriftMonitor`
(feature.py) keeps the newest `drift.live_window` feature rows per regime and turns them into a
`DriftCheck`. `ErrorStream` (concept.py) runs River's ADWIN on the 0/1 errors of matured
predictions (concept drift). `DriftTrigger` (trigger.py) decides when a retrain fires. One
module each, of the same small shape.

The drift score is the mean over features of the per-feature PSI, each capped at
`drift.psi_cap`. The mean uses every feature, so one noisy feature moves it by a 47th of its
noise; the cap bounds what a single broken feature (a feed switching to adjusted prices, a
volume column of zeros) can add, so it takes a shift of several features to fire a retrain.
The share of features above a PSI level was the alternative; it throws away how far features
moved and, on the bundled histories, separated shifts from no shift less well.

Why the default `drift.threshold` (0.75) is far above the textbook 0.1/0.25 of a single PSI:
the features of a daily series are strongly autocorrelated (a 63-day volatility or a
200-day moving-average distance changes little from one day to the next), so a window of 500
rows holds few independent observations and the PSI of such features between any two periods
is large even when nothing changed. Measured on the bundled S&P 500 and NASDAQ histories
(reference: the five years before 1 January of 2005..2017, live: the next up to 500 rows per
regime, VIX proxy throughout), the score with no change was 0.27-0.69 (median 0.51); with the
live volatility features doubled it was 0.71-1.07 (median 0.89). 0.75 stays above every
unchanged period, so a drift retrain means a shift of about that size; smaller shifts are left to
the weekly retrain. A shorter reference is noisier (with three years the unchanged score reached
1.0), so the threshold assumes the champion was trained on several years of rows.
"""

from __future__ import annotations

from daemon.monitor.drift.concept import ErrorStream
from daemon.monitor.drift.feature import DriftCheck, DriftMonitor, psi
from daemon.monitor.drift.trigger import DriftTrigger
from daemon.training.drift_reference import (
    REFERENCE_FORMAT,
    Reference,
    RegimeReference,
    build_reference,
)

__all__ = [
    "REFERENCE_FORMAT",
    "DriftCheck",
    "DriftMonitor",
    "DriftTrigger",
    "ErrorStream",
    "Reference",
    "RegimeReference",
    "build_reference",
    "psi",
]
