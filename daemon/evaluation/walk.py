"""The walk-forward run: every fold trains each variant with the production training code and
predicts the next step's bars; the predictions of all folds are then scored together, per
regime and overall, with moving-block bootstrap intervals.

Variants (the same folds, the same test rows):

- `baseline`: live rows only, no balancing, no regime weights;
- `weights`: + the regime loss weights (`daemon.training.sampling.row_weights`);
- `balancing`: + regime-balanced sampling (`daemon.training.sampling.balance`);
- `archive`: + the rare-event archive known at the cutoff;
- `all`: the three together, as `regimed retrain` trains.

Each fits `evaluate.models` with `daemon.training.fitting.fit_model` and combines them in the
soft vote weighted on an inner holdout (`daemon.training.ensemble`, `daemon.registry.ensemble`),
as the trainer does. With `training.refit` on (the default), the members are then fitted again,
as a promoted retrain's are (`daemon.training.refit`), on every training row of the fold: the
rows whose label day is before the cutoff (the purge the fold already applies), the vote
holdout included, with the same sampling, weights, seed and vote weights; those refit members
predict the test rows.

With `training.dask_scheduler` set, `evaluate` hands `run_folds` the cluster
(daemon.training.cluster) and every fold's fits run there as a retrain's do: the same models,
spread over the workers or one task each, the forests' exactly as here, XGBoost and LightGBM
within the tolerance docs/training.md states.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from daemon.config import Config
from daemon.config.evaluate import EvaluateConfig
from daemon.domain import REGIMES
from daemon.errors import RegimedError
from daemon.evaluation.data import Dataset, Fold, Index
from daemon.evaluation.results import (
    ControlResult,
    Difference,
    FoldSummary,
    GroupResult,
    Summary,
    Timeline,
    VariantResult,
)
from daemon.pipeline.features.defs import FEATURE_NAMES
from daemon.registry.ensemble import SoftVote, positive_proba
from daemon.training.ensemble import holdout_scores, inner_holdout, vote_weights
from daemon.training.fitting import fit_model
from daemon.training.refit import sampled
from daemon.training.scoring import (
    BASELINE_NAMES,
    baseline_predictions,
    bootstrap_difference,
    score,
)
from daemon.training.threads import resolve_n_jobs

if TYPE_CHECKING:
    from daemon.training.cluster import Cluster

logger = logging.getLogger(__name__)

__all__ = ["CONTROL", "NAIVE", "VARIANTS", "Predictions", "Variant", "run_folds", "summarize"]

Labels = npt.NDArray[np.int8]
Progress = Callable[[int, int, Fold], None]


@dataclass(frozen=True)
class Variant:
    """What a variant adds to the baseline."""

    name: str
    weights: bool
    balancing: bool
    archive: bool


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", weights=False, balancing=False, archive=False),
    Variant("weights", weights=True, balancing=False, archive=False),
    Variant("balancing", weights=False, balancing=True, archive=False),
    Variant("archive", weights=False, balancing=False, archive=True),
    Variant("all", weights=True, balancing=True, archive=True),
)
NAIVE: tuple[str, ...] = BASELINE_NAMES
#: The control: the `all` variant trained on training labels shuffled within each fold.
CONTROL = "shuffled_labels"


@dataclass(frozen=True)
class Predictions:
    """Test rows of every fold, in fold order, and each variant's predictions of them;
    `control_rows` are the test rows (positions in `rows`) the control predicted."""

    rows: Index
    preds: dict[str, Labels]
    control_rows: Index
    control: Labels
    folds: list[FoldSummary]


def run_folds(
    data: Dataset,
    folds: list[Fold],
    config: Config,
    settings: EvaluateConfig,
    progress: Progress | None = None,
    cluster: Cluster | None = None,
) -> Predictions:
    """Fit every variant (and the control, on its folds) in every fold, on `cluster` when it
    has a client; predict the test rows."""
    if not folds:
        raise RegimedError("no fold to evaluate")
    control_from = len(folds) - settings.control_folds if settings.control_folds else 0
    preds: dict[str, list[Labels]] = {name: [] for name in (*(v.name for v in VARIANTS), *NAIVE)}
    control: list[Labels] = []
    control_rows: list[Index] = []
    summary: list[FoldSummary] = []
    offset = 0
    h, target = config.label.horizon_bars, config.label.key
    for k, fold in enumerate(folds):
        if progress is not None:
            progress(k, len(folds), fold)
        started = time.perf_counter()
        X_test = data.X[fold.test]
        for variant in VARIANTS:
            preds[variant.name].append(
                _fit_predict(data, data.y, fold, variant, config, settings, cluster)
            )
        naive = baseline_predictions(data.y[fold.train], X_test, FEATURE_NAMES, h, target)
        for name in NAIVE:
            preds[name].append(naive[name])
        if k >= control_from:
            rng = np.random.default_rng([settings.seed, k])
            shuffled = data.y.copy()
            shuffled[fold.train] = data.y[rng.permutation(fold.train)]
            control.append(
                _fit_predict(data, shuffled, fold, VARIANTS[-1], config, settings, cluster)
            )
            control_rows.append(np.arange(offset, offset + len(fold.test)))
        offset += len(fold.test)
        summary.append(
            {
                "cutoff": fold.cutoff.isoformat(),
                "end": fold.end.isoformat(),
                "train_rows": len(fold.train),
                "archive_rows": len(fold.archive),
                "test_rows": len(fold.test),
                "archive_events": list(fold.events),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    return Predictions(
        rows=np.concatenate([f.test for f in folds]),
        preds={name: np.concatenate(p) for name, p in preds.items()},
        control_rows=np.concatenate(control_rows) if control_rows else np.empty(0, np.int64),
        control=np.concatenate(control) if control else np.empty(0, np.int8),
        folds=summary,
    )


def _fit_predict(
    data: Dataset,
    y: Labels,
    fold: Fold,
    variant: Variant,
    config: Config,
    settings: EvaluateConfig,
    cluster: Cluster | None = None,
) -> Labels:
    """Train one variant as `regimed retrain` would on this fold's rows; predict its test rows."""
    train = np.concatenate([fold.train, fold.archive]) if variant.archive else fold.train
    fit_rows, hold_rows = inner_holdout(
        data.days,
        train,
        config.label.horizon_bars,
        config.training.ensemble_holdout_fraction,
        hint=" (move evaluate.start later)",
    )

    def fitted(rows: Index) -> dict[str, Any]:
        fit = sampled(
            config, data.regimes, rows, balancing=variant.balancing, weights=variant.weights
        )
        if cluster is not None and cluster.client is not None:
            models, _, _ = cluster.fit_all(
                config,
                data.X[fit.rows],
                y[fit.rows],
                fit.weights,
                _quiet,
                stage="evaluate",
                names=settings.models,
                optional=(),
            )
            return models
        return {
            name: fit_model(
                name,
                data.X[fit.rows],
                y[fit.rows],
                fit.weights,
                config.models,
                n_jobs=resolve_n_jobs(settings.n_jobs),
                seed=config.training.seed,
            )
            for name in settings.models
        }

    models = fitted(fit_rows)
    # The vote, as the trainer's: each model weighs by its balanced accuracy on the holdout.
    hold_probas = {name: positive_proba(m, data.X[hold_rows]) for name, m in models.items()}
    scores = holdout_scores(hold_probas, y[hold_rows])
    vote = SoftVote(vote_weights(scores))
    if config.training.refit:  # as a promoted retrain: every row the fold knows, same vote
        models = fitted(np.asarray(train, dtype=np.int64))
    X_test = data.X[fold.test]
    return vote.predict({name: positive_proba(m, X_test) for name, m in models.items()})


def _quiet(event: str, fields: Mapping[str, Any]) -> None:
    """No progress per model: `evaluate` reports per fold."""


# -- scoring -------------------------------------------------------------------------------


def _interval(
    y: Labels,
    pred: Labels,
    days: npt.NDArray[np.datetime64],
    metric: Any,
    settings: EvaluateConfig,
    other: Labels | None = None,
) -> list[float] | None:
    """95% moving-block bootstrap interval of metric(pred), or of metric(pred) - metric(other).

    Reuses the gate's bootstrap (`daemon.training.scoring.bootstrap_difference`): against the
    prediction `1 - y`, which is wrong on every row, both metrics are exactly 0, so the
    difference is the metric itself in every resample."""
    if len(y) == 0:
        return None
    ref = (1 - y).astype(np.int8) if other is None else other
    found = bootstrap_difference(
        y, pred, ref, days, metric, settings.bootstrap_samples, settings.block_days, settings.seed
    )
    return None if found is None else [round(found[0], 4), round(found[1], 4)]


def _group(
    y: Labels,
    pred: Labels,
    days: npt.NDArray[np.datetime64],
    min_n: int,
    settings: EvaluateConfig,
) -> GroupResult:
    s = score(y, pred, ["all"] * len(y), min_n).overall
    ok = s.accuracy is not None
    return {
        "n": s.n,
        "accuracy": _round(s.accuracy),
        "balanced_accuracy": _round(s.balanced_accuracy),
        "ci95": _interval(y, pred, days, "balanced_accuracy", settings)
        if ok and s.balanced_accuracy is not None
        else None,
        "accuracy_ci95": _interval(y, pred, days, "accuracy", settings) if ok else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize(
    data: Dataset, predictions: Predictions, config: Config, settings: EvaluateConfig
) -> Summary:
    """The JSON document's `variants`, `differences` (each variant minus the baseline) and
    `controls`."""
    rows = predictions.rows
    y, days, regimes = data.y[rows], data.days[rows], data.regimes[rows]
    min_n = config.training.min_score_samples
    groups: dict[str, npt.NDArray[np.bool_]] = {r: regimes == r for r in REGIMES}
    variants: dict[str, VariantResult] = {}
    for name, pred in predictions.preds.items():
        variants[name] = {
            "per_regime": {
                r: _group(y[m], pred[m], days[m], min_n, settings) for r, m in groups.items()
            },
            "overall": _group(y, pred, days, min_n, settings),
        }
    base = predictions.preds["baseline"]
    differences: dict[str, dict[str, Difference]] = {}
    for variant in VARIANTS[1:]:
        pred = predictions.preds[variant.name]
        out: dict[str, Difference] = {}
        for r, m in (*groups.items(), ("overall", np.ones(len(y), dtype=bool))):
            a, b = _in(variants[variant.name], r), _in(variants["baseline"], r)
            delta = (
                None
                if a["balanced_accuracy"] is None or b["balanced_accuracy"] is None
                else round(a["balanced_accuracy"] - b["balanced_accuracy"], 4)
            )
            out[r] = {
                "delta": delta,
                "ci95": None
                if delta is None
                else _interval(y[m], pred[m], days[m], "balanced_accuracy", settings, base[m]),
            }
        differences[variant.name] = out
    c = predictions.control_rows
    control = _group(y[c], predictions.control, days[c], min_n, settings)
    folds = _control_folds(predictions, settings)
    return {
        "variants": variants,
        "differences": differences,
        "controls": {CONTROL: ControlResult(**control, folds=folds)},
    }


def _in(variant: VariantResult, group: str) -> GroupResult:
    """A variant's result for a regime or "overall"."""
    return variant["overall"] if group == "overall" else variant["per_regime"][group]


def _control_folds(predictions: Predictions, settings: EvaluateConfig) -> int:
    n = len(predictions.folds)
    return n if not settings.control_folds else min(n, settings.control_folds)


def timeline(
    data: Dataset, predictions: Predictions, names: Mapping[str, Labels] | None = None
) -> Timeline:
    """Per test day: the cumulative balanced accuracy of each variant and reference up to that
    day (None until both labels have been seen; plain accuracy would flatter "always up"),
    and the regime of the first symbol that day (for the shaded bands of the report's plot)."""
    rows = predictions.rows
    days = data.days[rows]
    order = np.argsort(days, kind="stable")
    unique, first = np.unique(days[order], return_index=True)
    ends = np.append(first[1:], len(order)) - 1
    y = data.y[rows][order]
    pos, neg = np.cumsum(y == 1)[ends], np.cumsum(y == 0)[ends]
    out: dict[str, list[float | None]] = {}
    for name, pred in (names or predictions.preds).items():
        p = pred[order]
        tp, tn = np.cumsum((y == 1) & (p == 1))[ends], np.cumsum((y == 0) & (p == 0))[ends]
        out[name] = [
            None if a == 0 or b == 0 else round(0.5 * (float(c) / a + float(d) / b), 5)
            for a, b, c, d in zip(pos, neg, tp, tn, strict=True)
        ]
    symbol = data.symbols[rows][order]
    regimes = data.regimes[rows][order]
    lead = symbol[0] if len(symbol) else ""
    regime_by_day = {
        str(d): str(r) for d, s, r in zip(days[order], symbol, regimes, strict=True) if s == lead
    }
    return {
        "days": [str(d) for d in unique],
        "regimes": [regime_by_day.get(str(d), "") for d in unique],
        "cumulative_balanced_accuracy": out,
    }
