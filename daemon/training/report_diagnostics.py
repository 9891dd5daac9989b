"""The retrain report's `diagnostics` section as plain values: the ensemble's calibration on the
validation rows (reliability bins, Brier score and the base rate's Brier), a 95% bootstrap
interval on each per-regime score, the market symbol's price and regimes over the validation
period, and the rolling balanced accuracy per regime across it.

Everything here is aggregated (bins, runs, sampled points), never one value per validation row,
so the stored report stays small. Read tolerantly like every section (see
`daemon.training.report`); computed by `daemon.training.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.training.report_sections import (
    as_int,
    as_interval,
    as_mapping,
    as_number,
    as_section,
    as_text,
)

__all__ = ["Calibration", "CalibrationBin", "Diagnostics", "RegimeRun", "Rolling", "Timeline"]


@dataclass(frozen=True)
class CalibrationBin:
    """Validation rows whose probability of 1 lies in [low, high): how many, their mean
    probability and the share of them whose label was 1 (both None for an empty bin)."""

    low: float
    high: float
    n: int
    mean_probability: float | None = None
    observed: float | None = None

    @classmethod
    def from_json(cls, doc: object) -> CalibrationBin | None:
        d = as_mapping(doc)
        low, high, n = as_number(d.get("low")), as_number(d.get("high")), as_int(d.get("n"))
        if low is None or high is None or n is None:
            return None
        return cls(low, high, n, as_number(d.get("mean_probability")), as_number(d.get("observed")))

    def to_json(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "mean_probability": self.mean_probability,
            "observed": self.observed,
        }


@dataclass(frozen=True)
class Calibration:
    """The ensemble's reliability bins, its Brier score and the naive reference's: the Brier
    of forecasting the validation base rate everywhere, base_rate * (1 - base_rate)."""

    bins: tuple[CalibrationBin, ...] = ()
    brier: float | None = None
    reference_brier: float | None = None
    base_rate: float | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Calibration:
        raw = doc.get("bins")
        found = [CalibrationBin.from_json(b) for b in raw] if isinstance(raw, list) else []
        return cls(
            tuple(b for b in found if b is not None),
            as_number(doc.get("brier")),
            as_number(doc.get("reference_brier")),
            as_number(doc.get("base_rate")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bins": [b.to_json() for b in self.bins],
            "brier": self.brier,
            "reference_brier": self.reference_brier,
            "base_rate": self.base_rate,
        }


@dataclass(frozen=True)
class RegimeRun:
    """Consecutive days of the market symbol in one regime, first and last day included."""

    first: str
    last: str
    regime: str

    def to_json(self) -> list[str]:
        return [self.first, self.last, self.regime]


@dataclass(frozen=True)
class Timeline:
    """The market symbol's close over the validation period (at most a few hundred sampled
    days) and its regimes as runs of days."""

    symbol: str | None = None
    days: tuple[str, ...] = ()
    close: tuple[float, ...] = ()
    runs: tuple[RegimeRun, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Timeline:
        days, close = doc.get("days"), doc.get("close")
        pairs = (
            [
                (str(d), c)
                for d, c in zip(days, (as_number(v) for v in close), strict=False)
                if c is not None
            ]
            if isinstance(days, list) and isinstance(close, list)
            else []
        )
        raw = doc.get("runs")
        runs = [
            RegimeRun(str(r[0]), str(r[1]), str(r[2]))
            for r in (raw if isinstance(raw, list) else [])
            if isinstance(r, list) and len(r) == 3
        ]
        return cls(
            as_text(doc.get("symbol")),
            tuple(d for d, _ in pairs),
            tuple(float(c) for _, c in pairs),
            tuple(runs),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "days": list(self.days),
            "close": list(self.close),
            "runs": [r.to_json() for r in self.runs],
        }


@dataclass(frozen=True)
class Rolling:
    """Balanced accuracy of the ensemble per regime (and "overall") over the trailing
    `window_days` validation days, at each of `days`; None where that window holds fewer
    than the minimum rows of the regime, or one label only."""

    window_days: int | None = None
    days: tuple[str, ...] = ()
    balanced_accuracy: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Rolling:
        days = doc.get("days")
        day_list = tuple(str(d) for d in days) if isinstance(days, list) else ()
        series = {
            str(k): tuple(as_number(v) for v in values)
            for k, values in as_mapping(doc.get("balanced_accuracy")).items()
            if isinstance(values, list) and len(values) == len(day_list)
        }
        return cls(as_int(doc.get("window_days")), day_list, series)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_days": self.window_days,
            "days": list(self.days),
            "balanced_accuracy": {k: list(v) for k, v in self.balanced_accuracy.items()},
        }


@dataclass(frozen=True)
class Diagnostics:
    """What a reviewer asks of the candidate beyond its scores: calibration, how sure each
    per-regime score is (`intervals`: regime -> metric -> 95% block-bootstrap interval), where
    the regimes were on the market's price, and how each regime's score moved over time."""

    calibration: Calibration | None = None
    intervals: Mapping[str, Mapping[str, tuple[float, float] | None]] = field(default_factory=dict)
    timeline: Timeline | None = None
    rolling: Rolling | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Diagnostics:
        calibration, timeline = as_section(doc.get("calibration")), as_section(doc.get("timeline"))
        rolling = as_section(doc.get("rolling"))
        intervals = {
            str(r): {str(m): as_interval(i) for m, i in as_mapping(v).items()}
            for r, v in as_mapping(doc.get("intervals")).items()
        }
        return cls(
            None if calibration is None else Calibration.from_json(calibration),
            intervals,
            None if timeline is None else Timeline.from_json(timeline),
            None if rolling is None else Rolling.from_json(rolling),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "calibration": None if self.calibration is None else self.calibration.to_json(),
            "intervals": {
                r: {m: None if i is None else list(i) for m, i in v.items()}
                for r, v in self.intervals.items()
            },
            "timeline": None if self.timeline is None else self.timeline.to_json(),
            "rolling": None if self.rolling is None else self.rolling.to_json(),
        }

    def interval(self, regime: str, metric: str) -> tuple[float, float] | None:
        """The 95% interval of `regime`'s `metric`; None when the report has none."""
        return self.intervals.get(regime, {}).get(metric)
