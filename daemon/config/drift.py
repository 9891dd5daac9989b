"""Configuration of drift detection and the drift retrain trigger (`[drift]`).

Kept apart from `daemon.config` (which imports it into `Config`) so each module stays small.
What the score means and why the default threshold sits far above the textbook PSI marks is in
the docstring of `daemon.monitor.drift`.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config.settings import bounded, show
from daemon.errors import ConfigError


@dataclass(frozen=True)
class DriftConfig:
    """When live features count as drifted, and how often drift may start a retrain.

    - `enabled`: false keeps measuring (metrics) but never starts a drift retrain.
    - `threshold`: the drift score (mean per-feature PSI, each feature capped at `psi_cap`,
      regime-conditional) above which a check counts towards a retrain.
    - `sustain`: consecutive checks above `threshold` before a retrain fires.
    - `cooldown_hours`: at least this long between two drift retrains.
    - `live_window`: rows kept per regime, newest last (feature rows for PSI; scored rows for
      live accuracy).
    - `bins`: quantile bins per feature in the training reference (plus one below the training
      minimum and one for NaN).
    - `min_reference_rows`: training rows a regime needs to get a reference; regimes with fewer
      are not checked.
    - `min_live_rows`: live rows a regime needs before it is checked.
    - `psi_cap`: the most one feature can add to the score, so a single broken feature cannot
      start a retrain on its own.
    - `concept_drift_triggers`: a rise of the live error rate found by ADWIN starts a retrain
      without waiting for `sustain` (still subject to the cooldown).
    - `adwin_delta`: ADWIN's significance level; smaller means fewer and later detections.
    """

    enabled: bool = True
    threshold: float = bounded(0.75, gt=0)
    sustain: int = bounded(3, ge=1)
    cooldown_hours: float = bounded(24.0, ge=0)
    live_window: int = bounded(500, ge=10, le=100_000)
    bins: int = bounded(10, ge=2, le=100)
    min_reference_rows: int = bounded(100, ge=10)
    min_live_rows: int = bounded(100, ge=10)
    psi_cap: float = bounded(4.0, gt=0)
    concept_drift_triggers: bool = True
    adwin_delta: float = bounded(0.002, gt=0, lt=1)

    def __post_init__(self) -> None:
        if self.min_live_rows > self.live_window:
            raise ConfigError(
                f"drift.min_live_rows = {show(self.min_live_rows)}: expected at most "
                f"drift.live_window ({show(self.live_window)})"
            )
