"""The sections of the retrain report that describe the data and the fit (the split, the data
window, the training mix, the soft vote, the artifact), and the tolerant readers of stored JSON
values that every section of the report parses with: a missing, null or wrongly typed value
reads as None (see `daemon.training.report`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.domain import REGIMES

__all__ = [
    "Artifact",
    "Confusion",
    "DataWindow",
    "EnsembleVote",
    "Split",
    "TrainingMix",
    "Window",
    "Windows",
    "as_count",
    "as_int",
    "as_interval",
    "as_mapping",
    "as_matrix",
    "as_number",
    "as_numbers",
    "as_section",
    "as_text",
    "as_texts",
    "regime_order",
]

Confusion = tuple[tuple[int, int], tuple[int, int]]


def as_number(value: object) -> float | None:
    """A finite number as it is (an int stays an int), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_section(value: object) -> Mapping[str, Any] | None:
    """A JSON object with at least one key, else None (a missing or empty section)."""
    return value if isinstance(value, Mapping) and value else None


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_numbers(value: object) -> dict[str, float | None]:
    return {str(k): as_number(v) for k, v in as_mapping(value).items()}


def as_texts(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def as_count(value: object) -> float:
    """A sample count: a number, or (older reports) a mapping of counts per regime, summed."""
    number = as_number(value)
    if number is not None:
        return number
    return sum(n for n in (as_number(v) for v in as_mapping(value).values()) if n is not None)


def as_matrix(value: object) -> Confusion | None:
    """[[tn, fp], [fn, tp]] as counts, or None when it is not that shape."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    rows = [r for r in value if isinstance(r, list | tuple) and len(r) == 2]
    numbers = [[as_number(v) for v in r] for r in rows]
    if len(numbers) != 2 or any(v is None or v < 0 for r in numbers for v in r):
        return None
    (a, b), (c, d) = ((int(v or 0) for v in r) for r in numbers)
    return (a, b), (c, d)


def as_interval(value: object) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lo, hi = (as_number(v) for v in value)
    return None if lo is None or hi is None else (lo, hi)




@dataclass(frozen=True)
class Split:
    """The time split: the validation cutoff, the end of training and the rows of each part."""

    cutoff: str | None = None
    train_end: str | None = None
    train_rows: int | None = None
    fit_rows: int | None = None
    ensemble_holdout_rows: int | None = None
    validation_rows: int | None = None
    purged_rows: int | None = None
    held_out_events: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Split:
        return cls(
            cutoff=as_text(doc.get("cutoff")),
            train_end=as_text(doc.get("train_end")),
            train_rows=as_int(doc.get("train_rows")),
            fit_rows=as_int(doc.get("fit_rows")),
            ensemble_holdout_rows=as_int(doc.get("ensemble_holdout_rows")),
            validation_rows=as_int(doc.get("validation_rows")),
            purged_rows=as_int(doc.get("purged_rows")),
            held_out_events=as_texts(doc.get("held_out_events")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff,
            "train_end": self.train_end,
            "train_rows": self.train_rows,
            "fit_rows": self.fit_rows,
            "ensemble_holdout_rows": self.ensemble_holdout_rows,
            "validation_rows": self.validation_rows,
            "purged_rows": self.purged_rows,
            "held_out_events": list(self.held_out_events),
        }


@dataclass(frozen=True)
class DataWindow:
    """The first training day and the last validation day."""

    first: str | None = None
    last: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DataWindow:
        return cls(as_text(doc.get("first")), as_text(doc.get("last")))

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last}


@dataclass(frozen=True)
class Window:
    """The days and rows one stage of a retrain saw: first day, last day, distinct rows."""

    first: str | None = None
    last: str | None = None
    rows: int | None = None

    @classmethod
    def from_json(cls, doc: object) -> Window | None:
        found = as_section(doc)
        if found is None:
            return None
        first, last = as_text(found.get("first")), as_text(found.get("last"))
        return cls(first, last, as_int(found.get("rows")))

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "rows": self.rows}


@dataclass(frozen=True)
class Windows:
    """Which rows each stage saw: the members' fit, the vote weights (the inner holdout), the
    validation, and the refit of a promoted candidate on every labelled row (None when there
    was none: `refit_note` says why); each refit member's fit seconds."""

    fit: Window | None = None
    vote: Window | None = None
    validation: Window | None = None
    refit: Window | None = None
    refit_fit_seconds: Mapping[str, float | None] = field(default_factory=dict)
    refit_note: str | None = None

    #: The stages in the order a retrain runs them.
    STAGES = ("fit", "vote", "validation", "refit")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Windows:
        fit, vote, validation, refit = (Window.from_json(doc.get(s)) for s in cls.STAGES)
        return cls(
            fit,
            vote,
            validation,
            refit,
            as_numbers(doc.get("refit_fit_seconds")),
            as_text(doc.get("refit_note")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            stage: None if w is None else w.to_json()
            for stage, w in zip(self.STAGES, self.stages(), strict=True)
        }
        out["refit_fit_seconds"] = dict(self.refit_fit_seconds)
        out["refit_note"] = self.refit_note
        return out

    def stages(self) -> tuple[Window | None, ...]:
        """The windows of `STAGES`, in that order."""
        return (self.fit, self.vote, self.validation, self.refit)


@dataclass(frozen=True)
class TrainingMix:
    """Fitting rows per regime before and after balanced sampling, each regime's share of the
    sample weight, the effective size ratio and the regimes with no rows."""

    regime_counts_before: Mapping[str, float | None] = field(default_factory=dict)
    regime_counts_after: Mapping[str, float | None] = field(default_factory=dict)
    weight_share: Mapping[str, float | None] = field(default_factory=dict)
    effective_size_ratio: float | None = None
    absent_regimes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrainingMix:
        return cls(
            as_numbers(doc.get("regime_counts_before")),
            as_numbers(doc.get("regime_counts_after")),
            as_numbers(doc.get("weight_share")),
            as_number(doc.get("effective_size_ratio")),
            as_texts(doc.get("absent_regimes")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "regime_counts_before": dict(self.regime_counts_before),
            "regime_counts_after": dict(self.regime_counts_after),
            "weight_share": dict(self.weight_share),
            "effective_size_ratio": self.effective_size_ratio,
            "absent_regimes": list(self.absent_regimes),
        }

    def regimes(self) -> list[str]:
        """REGIMES, then any other regime the counts or shares name."""
        return regime_order(self.regime_counts_before, self.regime_counts_after, self.weight_share)

    def before(self, regime: str) -> float | None:
        """Fitting rows of `regime` before sampling (None when the report has no figure)."""
        return self.regime_counts_before.get(regime)

    def after(self, regime: str) -> float | None:
        """Fitting rows of `regime` after sampling (None when the report has no figure)."""
        return self.regime_counts_after.get(regime)

    def share(self, regime: str) -> float | None:
        """`regime`'s share of the sample weight (None when the report has no figure)."""
        return self.weight_share.get(regime)


def regime_order(*keyed: Mapping[str, Any]) -> list[str]:
    """REGIMES, then the other keys of `keyed` in order of appearance (a report may name a
    regime this version does not know)."""
    extra = [r for cells in keyed for r in cells if r not in REGIMES]
    return [*REGIMES, *dict.fromkeys(extra)]


@dataclass(frozen=True)
class EnsembleVote:
    """The soft vote: each model's weight, the threshold, and the holdout balanced accuracy
    the weights come from."""

    weights: Mapping[str, float | None] = field(default_factory=dict)
    threshold: float | None = None
    holdout_balanced_accuracy: Mapping[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EnsembleVote:
        return cls(
            as_numbers(doc.get("weights")),
            as_number(doc.get("threshold")),
            as_numbers(doc.get("holdout_balanced_accuracy")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "threshold": self.threshold,
            "holdout_balanced_accuracy": dict(self.holdout_balanced_accuracy),
        }

    def weight(self, model: str) -> float | None:
        """`model`'s vote weight (None when the report has none)."""
        return self.weights.get(model)

    def holdout(self, model: str) -> float | None:
        """`model`'s holdout balanced accuracy (None when unknown or unmeasured)."""
        return self.holdout_balanced_accuracy.get(model)


@dataclass(frozen=True)
class Artifact:
    """Where the candidate's bundle was written and its sha256."""

    path: str | None = None
    sha256: str | None = None
    root: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Artifact:
        return cls(as_text(doc.get("path")), as_text(doc.get("sha256")), as_text(doc.get("root")))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "root": self.root}
