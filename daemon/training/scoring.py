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
    "METRICS",
    "Resampler",
    "Score",
    "Scores",
    "baseline_predictions",
    "baseline_probabilities",
    "bootstrap_difference",
    "confusion",
    "importances",
    "point",
    "reference_title",
    "score",
]

#: The figures a retrain reports per predictor: the two of `gate.metric` and the two that
#: judge the probability of up (AUC: does it rank up-days above down-days; Brier: is it right).
METRICS: tuple[str, ...] = ("balanced_accuracy", "accuracy", "auc", "brier")

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


#: What label 1 says under each `label.target`, for the naive references' names.
_ONE = {"direction": "up", "volatility": "rising volatility", "drawdown": "drawdown"}


def reference_title(name: str, target: str | None = None) -> str:
    """A naive reference's name in words under `target` (a `label.target`, or a
    `LabelConfig.key`; None: direction). `always_up` predicts 1 whatever the target:

    >>> reference_title("always_up"), reference_title("always_up", "volatility:h=5:window=21")
    ('always up', 'always 1 (rising volatility)')
    >>> reference_title("previous_return", "drawdown")
    'previous fall'
    """
    kind = _kind(target)
    if name == "always_up" and kind != "direction":
        return f"always 1 ({_ONE.get(kind, kind)})"
    if name == "previous_return" and kind != "direction":
        return "previous fall"
    return name.replace("_", " ")


def _kind(target: str | None) -> str:
    """The `label.target` of a target or a `LabelConfig.key` (None: direction)."""
    return (target or "direction").split(":")[0]


def baseline_predictions(
    train_labels: npt.ArrayLike,
    X_val: npt.ArrayLike,
    feature_names: Sequence[str],
    horizon_bars: int,
    target: str | None = None,
) -> dict[str, Labels]:
    """Predictions of the naive references for the validation rows `X_val`.

    `always_up` says 1 everywhere; `training_majority` says the more frequent training label
    (1 on a tie: the market drifts up); `previous_return` says 1 when the return over the past
    label horizon (feature `ret_{horizon_bars}`, or `ret_1` when there is no such feature) is
    above zero -- momentum, the cheapest signal there is. For the `volatility` and `drawdown`
    targets (`target`, a `label.target` or its key) it says 1 when that return is below zero
    ("previous fall"): volatility rises and drawdowns come after falls, the cheapest signal
    for those.
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
        "previous_return": (
            X[:, names.index(column)] > 0
            if _kind(target) == "direction"
            else X[:, names.index(column)] < 0
        ).astype(np.int8),
    }


def baseline_probabilities(
    train_labels: npt.ArrayLike,
    X_train: npt.ArrayLike,
    X_val: npt.ArrayLike,
    feature_names: Sequence[str],
    horizon_bars: int,
) -> dict[str, npt.NDArray[np.float64]]:
    """The naive references as probabilities of up, for AUC and the Brier score.

    `always_up` and `training_majority` forecast the training rate of up-days everywhere
    (a constant: AUC 0.5, the Brier score of climatology); `previous_return` forecasts the
    training rate of up-days after a rising past return, or after a falling one.
    """
    labels = _labels(train_labels)
    if len(labels) == 0:
        raise ValueError("the naive references need training labels; got none")
    names = list(feature_names)
    column = f"ret_{horizon_bars}" if f"ret_{horizon_bars}" in names else "ret_1"
    train = np.asarray(X_train)[:, names.index(column)] > 0
    val = np.asarray(X_val)[:, names.index(column)] > 0
    rate = float(labels.mean())
    after_up = float(labels[train].mean()) if train.any() else rate
    after_down = float(labels[~train].mean()) if (~train).any() else rate
    n = len(val)
    return {
        "always_up": np.full(n, rate),
        "training_majority": np.full(n, rate),
        "previous_return": np.where(val, after_up, after_down),
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
    trading days (`Resampler`). Deterministic in `seed`.

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
    resampler = Resampler(truth, day, n_resamples, block_days, seed)
    return resampler.interval(resampler.labels(metric, a) - resampler.labels(metric, b))


class Resampler:
    """The moving-block bootstrap over trading days of one set of scored rows.

    Rows are grouped by day and each resample strings together blocks of `block_days`
    consecutive days (so serially correlated days stay together), as many days as the data
    has. Every predictor scored through one Resampler sees the same resamples, so a
    difference of two figures is a paired difference. Deterministic in `seed`.

    A figure is an array with one value per resample (NaN where it is undefined in that
    resample: balanced accuracy or AUC with one true class); `interval` turns it into the 95%
    percentile interval.
    """

    def __init__(
        self,
        y_true: npt.ArrayLike,
        days: npt.ArrayLike,
        n_resamples: int,
        block_days: int,
        seed: int,
    ) -> None:
        if block_days < 1:
            raise ValueError(f"block_days = {block_days}: expected at least 1")
        self.y = _labels(y_true)
        day = np.asarray(days)
        if len(day) != len(self.y):
            raise ValueError(f"y_true and days differ in length ({len(self.y)}, {len(day)})")
        n = 0 if len(self.y) == 0 else max(0, n_resamples)
        _, group = np.unique(day, return_inverse=True)
        self.group = group.ravel().astype(np.intp)
        m = int(self.group.max()) + 1 if len(self.group) else 0
        self.counts = np.zeros((n, m))
        if n and m:
            length = min(block_days, m)
            blocks = -(-m // length)
            rng = np.random.default_rng(seed)
            starts = rng.integers(0, m - length + 1, size=(n, blocks))
            offsets = np.arange(length)
            # Chunks keep the index matrix small (chunk x days).
            chunk = max(1, 2_000_000 // m)
            for lo in range(0, n, chunk):
                picked = (starts[lo : lo + chunk, :, None] + offsets).reshape(-1, blocks * length)
                picked = picked[:, :m]
                rows = picked.shape[0]
                flat = (picked + m * np.arange(rows)[:, None]).ravel()
                counts = np.bincount(flat, minlength=rows * m).reshape(rows, m)
                self.counts[lo : lo + rows] = counts

    @property
    def n_resamples(self) -> int:
        return int(self.counts.shape[0])

    def _per_day(self, values: npt.NDArray[np.float64]) -> Any:
        return np.bincount(self.group, weights=values, minlength=self.counts.shape[1])

    def labels(self, metric: str, pred: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """`metric` ("accuracy" or "balanced_accuracy") of 0/1 predictions, per resample."""
        p = _labels(pred)
        up, down = self.y == 1, self.y == 0
        if metric == "accuracy":
            hits = self.counts @ self._per_day((p == self.y).astype(np.float64))
            total = self.counts @ self._per_day(np.ones(len(p)))
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.asarray(hits / total, dtype=np.float64)
        pos = self.counts @ self._per_day(up.astype(np.float64))
        neg = self.counts @ self._per_day(down.astype(np.float64))
        tp = self.counts @ self._per_day((up & (p == 1)).astype(np.float64))
        tn = self.counts @ self._per_day((down & (p == 0)).astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 0.5 * (tp / pos + tn / neg)
        return np.asarray(np.where((pos > 0) & (neg > 0), out, np.nan), dtype=np.float64)

    def brier(self, proba: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The Brier score (mean squared error of the probability of up), per resample."""
        p = np.asarray(proba, dtype=np.float64)
        sse = self.counts @ self._per_day((p - self.y) ** 2)
        total = self.counts @ self._per_day(np.ones(len(p)))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(sse / total, dtype=np.float64)

    def auc(self, proba: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The area under the ROC curve of the probability of up, per resample."""
        p = np.asarray(proba, dtype=np.float64)
        out = np.full(self.n_resamples, np.nan)
        if not len(p) or not self.n_resamples:
            return out
        order = np.argsort(p, kind="stable")
        values, starts = np.unique(p[order], return_index=True)
        del values
        y = self.y[order].astype(np.float64)
        group = self.group[order]
        chunk = max(1, 2_000_000 // len(p))
        for lo in range(0, self.n_resamples, chunk):
            weights = self.counts[lo : lo + chunk][:, group]
            pos = np.add.reduceat(weights * y, starts, axis=1)
            neg = np.add.reduceat(weights * (1 - y), starts, axis=1)
            below = np.cumsum(neg, axis=1) - neg
            total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
            out[lo : lo + chunk] = np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)
        return out

    @staticmethod
    def interval(values: npt.NDArray[np.float64]) -> tuple[float, float] | None:
        """The 95% percentile interval of a figure's resampled values (NaN left out); None
        when no resample has a value."""
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return None
        low, high = np.percentile(finite, [2.5, 97.5])
        return float(low), float(high)


    def figure(
        self, metric: str, pred: npt.ArrayLike, proba: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """`metric` (one of `METRICS`) of a predictor's 0/1 calls `pred` and probabilities of
        up `proba`, per resample."""
        if metric in ("accuracy", "balanced_accuracy"):
            return self.labels(metric, pred)
        if metric == "brier":
            return self.brier(proba)
        if metric == "auc":
            return self.auc(proba)
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")


def point(
    metric: str, y_true: npt.ArrayLike, pred: npt.ArrayLike, proba: npt.ArrayLike
) -> float | None:
    """`metric` (one of `METRICS`) on all rows once; None where it is undefined (no rows; one
    true class for balanced accuracy and AUC)."""
    truth = _labels(y_true)
    if len(truth) == 0:
        return None
    whole = Resampler(truth, np.zeros(len(truth)), 0, 1, 0)
    whole.counts = np.ones((1, 1))  # one "resample": every row once
    value = whole.figure(metric, pred, proba)[0]
    return float(value) if np.isfinite(value) else None


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
