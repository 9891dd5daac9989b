"""The live report's figures: the champions' stored predictions against their matured labels,
per regime, per model version and per week or month (`regimed report --live`).

Every stored prediction was made by the champion of its day (only the champion scores live
rows), so the report covers them all and lists the versions beside. A prediction counts once
its label has matured (`label.horizon_bars` bars later); the others are pending. Balanced
accuracy leads (a model that always says "up" scores 0.5), with a 95% moving-block bootstrap
interval over trading days (`gate.bootstrap_samples`, `gate.bootstrap_block_days`), as the
retrain report's intervals are made; accuracy and the share of up labels (what "always up"
would score) stand beside it. A group of fewer than `MIN_ROWS` matured predictions gets its
count and no figures: a score on a handful of rows says nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

from daemon.domain import REGIMES
from daemon.store.predictions import StoredPrediction
from daemon.training.scoring import Resampler, point

__all__ = [
    "MIN_ROWS",
    "Cell",
    "LiveReport",
    "Period",
    "VersionRow",
    "live_report",
    "period_of",
]

#: Matured predictions a group needs before it gets figures.
MIN_ROWS = 10
#: Up to this many weeks between the first and last matured day, periods are weeks; beyond,
#: months (so a chart has between a handful and a few dozen points per regime).
WEEKS_MAX = 26

PeriodKind = Literal["week", "month"]


class Cell(TypedDict):
    """One group of matured predictions: counts, figures (None below `MIN_ROWS`, balanced
    accuracy also None with one true class) and the 95% interval of balanced accuracy."""

    n: int
    up_share: float | None
    accuracy: float | None
    balanced_accuracy: float | None
    ci95: list[float] | None


class Period(TypedDict):
    """One week (`2024-W09`) or month (`2024-03`) of matured predictions."""

    period: str
    first_day: str
    overall: Cell
    per_regime: dict[str, Cell]


class VersionRow(TypedDict):
    """What one model version predicted while it was the champion."""

    predictions: int
    matured: int
    first_day: str
    last_day: str
    balanced_accuracy: float | None
    accuracy: float | None


class LiveReport(TypedDict):
    """The `regimed report --live --json` document."""

    since: str | None
    champion: str | None
    predictions: int
    matured: int
    pending: int
    first_day: str | None
    last_day: str | None
    period: PeriodKind
    bootstrap: dict[str, int]
    overall: Cell
    per_regime: dict[str, Cell]
    versions: dict[str, VersionRow]
    periods: list[Period]


@dataclass(frozen=True)
class _Scorer:
    """Cells from matured predictions, with the bootstrap settings."""

    samples: int
    block_days: int
    seed: int

    def cell(self, rows: Sequence[StoredPrediction]) -> Cell:
        n = len(rows)
        if n < MIN_ROWS:
            return {"n": n, "up_share": None, "accuracy": None, "balanced_accuracy": None,
                    "ci95": None}  # fmt: skip
        y = np.array([r.label for r in rows], dtype=np.int8)
        pred = np.array([r.prediction for r in rows], dtype=np.int8)
        proba = np.array([r.probability for r in rows])
        balanced = point("balanced_accuracy", y, pred, proba)
        ci = None
        if balanced is not None:
            days = np.array([r.ts for r in rows])
            resampler = Resampler(y, days, self.samples, self.block_days, self.seed)
            interval = resampler.interval(resampler.labels("balanced_accuracy", pred))
            ci = None if interval is None else [interval[0], interval[1]]
        return {
            "n": n,
            "up_share": float(y.mean()),
            "accuracy": point("accuracy", y, pred, proba),
            "balanced_accuracy": balanced,
            "ci95": ci,
        }

    def per_regime(self, rows: Sequence[StoredPrediction]) -> dict[str, Cell]:
        return {regime: self.cell([r for r in rows if r.regime == regime]) for regime in REGIMES}


def period_of(day: str, kind: PeriodKind) -> str:
    """The week (ISO, `2024-W09`) or month (`2024-03`) of a YYYY-MM-DD day.

    >>> period_of("2024-03-01", "week"), period_of("2024-03-01", "month")
    ('2024-W09', '2024-03')
    """
    if kind == "month":
        return day[:7]
    year, week, _ = dt.date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def live_report(
    predictions: Iterable[StoredPrediction],
    *,
    since: dt.date | None = None,
    champion: str | None = None,
    bootstrap_samples: int = 1000,
    block_days: int = 5,
    seed: int = 42,
) -> LiveReport:
    """The live report of `predictions` (oldest first, as `read_predictions` gives them);
    `since` and `champion` are recorded as given."""
    rows = list(predictions)
    matured = [r for r in rows if r.label is not None]
    days = [r.ts for r in matured]
    kind: PeriodKind = "week"
    if days:
        span = dt.date.fromisoformat(max(days)) - dt.date.fromisoformat(min(days))
        kind = "week" if span.days <= 7 * WEEKS_MAX else "month"
    scorer = _Scorer(bootstrap_samples, block_days, seed)
    groups: dict[str, list[StoredPrediction]] = {}
    for r in matured:
        groups.setdefault(period_of(r.ts, kind), []).append(r)
    periods: list[Period] = [
        {
            "period": name,
            "first_day": min(r.ts for r in group),
            "overall": scorer.cell(group),
            "per_regime": scorer.per_regime(group),
        }
        for name, group in sorted(groups.items())
    ]
    return {
        "since": None if since is None else since.isoformat(),
        "champion": champion,
        "predictions": len(rows),
        "matured": len(matured),
        "pending": len(rows) - len(matured),
        "first_day": min(r.ts for r in rows) if rows else None,
        "last_day": max(r.ts for r in rows) if rows else None,
        "period": kind,
        "bootstrap": {"samples": bootstrap_samples, "block_days": block_days},
        "overall": scorer.cell(matured),
        "per_regime": scorer.per_regime(matured),
        "versions": _versions(rows, scorer),
        "periods": periods,
    }


def _versions(rows: Sequence[StoredPrediction], scorer: _Scorer) -> dict[str, VersionRow]:
    """Each model version's predictions, in the order it first predicted."""
    by_version: dict[str, list[StoredPrediction]] = {}
    for r in rows:
        by_version.setdefault(r.model_version, []).append(r)
    out: dict[str, VersionRow] = {}
    for version, group in by_version.items():
        cell = _Scorer(0, scorer.block_days, scorer.seed).cell(
            [r for r in group if r.label is not None]
        )
        out[version] = {
            "predictions": len(group),
            "matured": cell["n"],
            "first_day": min(r.ts for r in group),
            "last_day": max(r.ts for r in group),
            "balanced_accuracy": cell["balanced_accuracy"],
            "accuracy": cell["accuracy"],
        }
    return out
