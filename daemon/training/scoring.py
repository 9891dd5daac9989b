"""Validation scores per regime, the naive references a model must beat, and a block bootstrap.

Up-days dominate (about 58% of 5-day returns), so a model that always says "up" looks good on
accuracy. Scores therefore carry balanced accuracy (the mean of the recalls of "up" and "down",
0.5 for any constant prediction) beside accuracy, and every model is compared with three naive
references: always up, the training majority, and the sign of the previous return.

Balanced accuracy needs both classes among the true labels. When a regime's validation rows are
all "up" (or all "down"), sklearn's `balanced_accuracy_score` silently falls back to the recall
of the one class present -- plain accuracy -- so "always up" would score 1.0 on an all-up crash
rebound. That number measures nothing a balanced score promises, so it is reported as null
(None) here; accuracy is still given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from daemon.config.training import GateMetric
from daemon.domain import REGIMES
from daemon.pipeline.features.defs import FEATURE_NAMES
from daemon.training.report_sections import Confusion

__all__ = [
    "BASELINE_NAMES",
    "Score",
    "Scores",
    "baseline_predictions",
    "bootstrap_difference",
    "confusion",
    "importances",
    "score",
]

Labels = npt.NDArray[np.int8]

#: The naive references, in the order reports list them.
BASELINE_NAMES: tuple[str, ...] = ("always_up", "training_majority", "previous_return")


@dataclass(frozen=True)
class Score:
    """The score of one group of validation rows; both figures None when `n` is below the
    minimum, balanced accuracy None when the rows' true labels hold one class only."""

    n: int
    accuracy: float | None
    balanced_accuracy: float | None

    def value(self, metric: GateMetric) -> float | None:
        """The figure named by `metric` (a `gate.metric` value)."""
        return self.accuracy if metric == "accuracy" else self.balanced_accuracy

    def as_dict(self) -> dict[str, int | float | None]:
        return {"n": self.n, "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


@dataclass(frozen=True)
class Scores:
    """Scores per regime (every regime of `REGIMES`) and over all validation rows."""

    per_regime: Mapping[str, Score]
    overall: Score

    def as_dict(self) -> dict[str, Any]:
        """The `validation` shape of the retrain report: `per_regime` and `overall`."""
        return {
            "per_regime": {r: s.as_dict() for r, s in self.per_regime.items()},
            "overall": self.overall.as_dict(),
        }


def score(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, regimes: Sequence[str] | npt.ArrayLike, min_n: int
) -> Scores:
    """Accuracy and balanced accuracy of 0/1 predictions, per regime and overall; a group
    with fewer than `min_n` rows (overall included) gets null figures, too few to judge by."""
    truth, pred = _labels(y_true), _labels(y_pred)
    groups = np.asarray(regimes, dtype=object)
    if not len(truth) == len(pred) == len(groups):
        raise ValueError(
            f"y_true, y_pred and regimes differ in length ({len(truth)}, {len(pred)}, "
            f"{len(groups)})"
        )
    per_regime = {}
    for regime in REGIMES:
        rows = groups == regime
        per_regime[regime] = _score(truth[rows], pred[rows], min_n)
    return Scores(per_regime, _score(truth, pred, min_n))


def _score(truth: Labels, pred: Labels, min_n: int) -> Score:
    n = len(truth)
    if n == 0 or n < min_n:
        return Score(n, None, None)
    accuracy = float(np.mean(truth == pred))
    if np.unique(truth).size < 2:
        return Score(n, accuracy, None)
    return Score(n, accuracy, float(balanced_accuracy_score(truth, pred)))


def baseline_predictions(
    train_labels: npt.ArrayLike,
    X_val: npt.ArrayLike,
    feature_names: Sequence[str],
    horizon_bars: int,
) -> dict[str, Labels]:
    """Predictions of the naive references for the validation rows `X_val`.

    `always_up` says 1 everywhere; `training_majority` says the more frequent training label
    (1 on a tie: the market drifts up); `previous_return` says 1 when the return over the past
    label horizon (feature `ret_{horizon_bars}`, or `ret_1` when there is no such feature) is
    above zero -- momentum, the cheapest signal there is.
    """
    labels = _labels(train_labels)
    if len(labels) == 0:
        raise ValueError("training_majority needs training labels; got none")
    X = np.asarray(X_val)
    names = list(feature_names)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(
            f"X_val has shape {X.shape}; expected (rows, {len(names)}) for the feature names"
        )
    column = f"ret_{horizon_bars}" if f"ret_{horizon_bars}" in names else "ret_1"
    if column not in names:
        raise ValueError(f"previous_return needs feature {column!r}; it is not among the features")
    n = X.shape[0]
    majority = 1 if 2 * int(labels.sum()) >= len(labels) else 0
    return {
        "always_up": np.ones(n, dtype=np.int8),
        "training_majority": np.full(n, majority, dtype=np.int8),
        "previous_return": (X[:, names.index(column)] > 0).astype(np.int8),
    }


def bootstrap_difference(
    y_true: npt.ArrayLike,
    pred_a: npt.ArrayLike,
    pred_b: npt.ArrayLike,
    days: npt.ArrayLike,
    metric: GateMetric,
    n_resamples: int,
    block_days: int,
    seed: int,
) -> tuple[float, float] | None:
    """95% percentile interval of metric(a) - metric(b) under a moving-block bootstrap over
    trading days: rows are grouped by day and each resample strings together blocks of
    `block_days` consecutive days (so serially correlated days stay together), as many days
    as the data has. Deterministic in `seed`.

    Returns None when there is nothing to resample (no rows, `n_resamples` 0) or the metric is
    undefined on the data (balanced accuracy with one true class). Resamples in which balanced
    accuracy is undefined are left out of the percentiles.
    """
    truth, a, b = _labels(y_true), _labels(pred_a), _labels(pred_b)
    day = np.asarray(days)
    if not len(truth) == len(a) == len(b) == len(day):
        raise ValueError(
            f"y_true, pred_a, pred_b and days differ in length ({len(truth)}, {len(a)}, "
            f"{len(b)}, {len(day)})"
        )
    if block_days < 1:
        raise ValueError(f"block_days = {block_days}: expected at least 1")
    one_class = np.unique(truth).size < 2
    if n_resamples <= 0 or len(truth) == 0 or (metric == "balanced_accuracy" and one_class):
        return None
    _, group = np.unique(day, return_inverse=True)
    stats = _day_stats(truth, a, b, group.ravel())
    m = stats.shape[0]
    length = min(block_days, m)
    blocks = -(-m // length)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, m - length + 1, size=(n_resamples, blocks))
    diffs = np.empty(n_resamples)
    offsets = np.arange(length)
    # Chunks keep the resample-by-day count matrix small (chunk x days).
    chunk = max(1, 2_000_000 // m)
    for lo in range(0, n_resamples, chunk):
        picked = (starts[lo : lo + chunk, :, None] + offsets).reshape(-1, blocks * length)[:, :m]
        rows = picked.shape[0]
        flat = (picked + m * np.arange(rows)[:, None]).ravel()
        weights = np.bincount(flat, minlength=rows * m).reshape(rows, m)
        diffs[lo : lo + rows] = _difference(weights @ stats, metric)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return None
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _day_stats(truth: Labels, a: Labels, b: Labels, group: npt.NDArray[np.intp]) -> Any:
    """Per day: positives, negatives, and the true positives and negatives of a and of b."""
    up, down = truth == 1, truth == 0
    columns = (up, down, up & (a == 1), down & (a == 0), up & (b == 1), down & (b == 0))
    return np.stack([np.bincount(group, weights=c) for c in columns], axis=1)


def _difference(totals: Any, metric: GateMetric) -> Any:
    """metric(a) - metric(b) from summed day statistics (one row per resample)."""
    pos, neg, tp_a, tn_a, tp_b, tn_b = totals.T
    if metric == "accuracy":
        return (tp_a + tn_a - tp_b - tn_b) / (pos + neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        ba_a = 0.5 * (tp_a / pos + tn_a / neg)
        ba_b = 0.5 * (tp_b / pos + tn_b / neg)
    return np.where((pos > 0) & (neg > 0), ba_a - ba_b, np.nan)


def _labels(values: npt.ArrayLike) -> Labels:
    """0/1 labels as int8 (pandas nullable Int8 included; a missing label is an error)."""
    if isinstance(values, pd.Series | pd.api.extensions.ExtensionArray):
        array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        array = np.asarray(values)
    if array.dtype == object:
        array = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError("labels contain missing values")
    out = array.astype(np.int8).ravel()
    if ((out != 0) & (out != 1)).any():
        raise ValueError(f"labels must be 0 or 1; got {sorted(set(out.tolist()) - {0, 1})}")
    return out


def confusion(y: npt.NDArray[np.int8], pred: npt.NDArray[np.int8]) -> Confusion:
    """[[true down, false up], [false down, true up]]."""
    out = np.zeros((2, 2), dtype=np.int64)
    np.add.at(out, (y.astype(np.int64), pred.astype(np.int64)), 1)
    (tn, fp), (fn, tp) = out.tolist()
    return (tn, fp), (fn, tp)


def importances(models: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Normalized feature importances of the models that have them (the tree ensembles)."""
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        values = getattr(model, "feature_importances_", None)
        if values is None:
            continue
        arr = np.asarray(values, dtype=np.float64)
        total = arr.sum()
        if len(arr) != len(FEATURE_NAMES) or total <= 0:
            continue
        out[name] = {f: round(float(v / total), 6) for f, v in zip(FEATURE_NAMES, arr, strict=True)}
    return out
