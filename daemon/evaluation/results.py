"""The evaluation's results document (`regimed evaluate --json`, `results.json`) and the series
of its cumulative-accuracy plot, as TypedDicts: plain JSON values whose keys and types mypy
checks in every reader (the terminal table, the markdown and the HTML report).

Scores are null when a group has too few test rows (`training.min_score_samples`), balanced
accuracy also when its rows hold one true label only; an interval is null when its score is.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "ControlResult",
    "DataSummary",
    "Difference",
    "EvaluationDocument",
    "EvaluationSettings",
    "FoldSummary",
    "GroupResult",
    "Summary",
    "Timeline",
    "VariantResult",
]


class GroupResult(TypedDict):
    """The scores of one group of test rows (a regime, or all of them) with 95% intervals."""

    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    ci95: list[float] | None  # of balanced accuracy
    accuracy_ci95: list[float] | None


class VariantResult(TypedDict):
    """A variant's (or naive reference's) scores per regime and overall."""

    per_regime: dict[str, GroupResult]
    overall: GroupResult


class Difference(TypedDict):
    """A variant's balanced accuracy minus the baseline's, and the interval of the difference."""

    delta: float | None
    ci95: list[float] | None


class ControlResult(GroupResult):
    """The `all` variant trained on shuffled labels, over its last `folds` folds."""

    folds: int


class Summary(TypedDict):
    """What the scoring of all folds adds to the document."""

    variants: dict[str, VariantResult]
    differences: dict[str, dict[str, Difference]]  # variant -> regime or "overall"
    controls: dict[str, ControlResult]


class FoldSummary(TypedDict):
    """One fold: its cutoff, the end of its test period and its rows."""

    cutoff: str
    end: str
    train_rows: int
    archive_rows: int
    test_rows: int
    archive_events: list[str]
    seconds: float


class DataSummary(TypedDict):
    """The history evaluated: where from, which symbols, which labelled days, the VIX span."""

    source: str
    symbols: list[str]
    first_day: str
    last_day: str
    vix: list[str] | None  # [first day, last day]; None: the proxy


class EvaluationSettings(TypedDict):
    """The settings the evaluation ran with."""

    start: str
    end: str | None
    step: str
    models: list[str]
    horizon_bars: int
    #: the label target evaluated (`LabelConfig.key`)
    target: str
    bootstrap_samples: int
    block_days: int
    min_score_samples: int
    archive_budget: int
    refit: bool  # training.refit: each fold's members refit on every row it knows


class EvaluationDocument(TypedDict):
    """`regimed evaluate --json`: the data, the settings, every variant's and reference's
    scores, the differences to the baseline, the control and the folds."""

    data: DataSummary
    settings: EvaluationSettings
    variant_names: list[str]
    naive_names: list[str]
    variants: dict[str, VariantResult]
    differences: dict[str, dict[str, Difference]]
    controls: dict[str, ControlResult]
    folds: list[FoldSummary]
    duration_seconds: float


class Timeline(TypedDict):
    """Per test day: the cumulative balanced accuracy of each series (None until both labels
    have been seen) and the first symbol's regime."""

    days: list[str]
    regimes: list[str]
    cumulative_balanced_accuracy: dict[str, list[float | None]]
