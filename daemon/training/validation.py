"""A candidate on the validation rows: the scores of every model, the vote and the naive
references (`validate`), and the report's aggregated diagnostics (`diagnose`): the two steps of
a retrain (daemon.training.trainer) between the fits and the gate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.pipeline.features.defs import FEATURE_NAMES
from daemon.registry.ensemble import Ensemble
from daemon.store.sqlite import Store
from daemon.training.report import ModelScores, ScoreTable, Validation
from daemon.training.report_diagnostics import Diagnostics

if TYPE_CHECKING:
    from daemon.training.gate import Predictor
    from daemon.training.scoring import Scores

__all__ = ["diagnose", "model_scores", "validate"]


def validate(
    config: Config,
    ensemble: Ensemble,
    X_all: npt.NDArray[np.float32],
    y_all: npt.NDArray[np.int8],
    regimes_all: npt.NDArray[np.str_],
    train: npt.NDArray[np.int64],
    val: npt.NDArray[np.int64],
    fit_seconds: Mapping[str, float],
) -> tuple[Validation, dict[str, npt.NDArray[np.int8]], Predictor, dict[str, Predictor]]:
    """Scores of every model, the ensemble and the naive references on the validation rows
    `val` (the references learn from the rows `train`): (the report's `validation`,
    predictions by model, the candidate ensemble's and the references' calls and
    probabilities)."""
    from daemon.training.gate import Predictor
    from daemon.training.scoring import baseline_predictions, baseline_probabilities, score

    min_n = config.training.min_score_samples
    regimes = regimes_all[val]
    y = y_all[val]
    X = X_all[val]
    probas = ensemble.model_probas(X)
    preds = {name: (p > 0.5).astype(np.int8) for name, p in probas.items()}
    preds["ensemble"] = ensemble.vote.predict(probas)
    models = {
        name: model_scores(score(y, p, regimes, min_n), fit_seconds.get(name))
        for name, p in preds.items()
    }
    horizon = config.label.horizon_bars
    naive = baseline_predictions(y_all[train], X, FEATURE_NAMES, horizon, config.label.key)
    naive_proba = baseline_probabilities(y_all[train], X_all[train], X, FEATURE_NAMES, horizon)
    references = {name: Predictor(p, naive_proba[name]) for name, p in naive.items()}
    baselines = {name: model_scores(score(y, p, regimes, min_n), None) for name, p in naive.items()}
    ens = ScoreTable.of(score(y, preds["ensemble"], regimes, min_n))
    validation = Validation(ens.per_regime, ens.overall, baselines, models)
    candidate = Predictor(preds["ensemble"], ensemble.vote.proba(probas))
    return validation, preds, candidate, references


def diagnose(
    config: Config,
    store: Store,
    y_all: npt.NDArray[np.int8],
    days_all: npt.NDArray[np.datetime64],
    regimes_all: npt.NDArray[np.str_],
    val: npt.NDArray[np.int64],
    candidate: Predictor,
) -> Diagnostics:
    """The report's diagnostics of the candidate on the validation rows, aggregated
    (daemon.training.diagnostics): calibration, per-regime intervals, the market symbol's
    price and regimes over the validation period, rolling balanced accuracy."""
    from daemon.training import diagnostics as diag

    y, days, regimes = y_all[val], days_all[val], regimes_all[val]
    market = config.regime.market_symbol
    bars = pd.DataFrame()
    if len(val):
        first, last = days.min(), days.max()
        bars = store.bars(market, since=str(np.datetime64(first, "D")))
        bars = bars[bars["ts"].to_numpy(dtype="datetime64[D]") <= last]
    return Diagnostics(
        calibration=diag.calibration(y, candidate.proba),
        intervals=diag.regime_intervals(
            y,
            candidate.pred,
            regimes,
            days,
            min_n=config.training.min_score_samples,
            n_resamples=config.gate.bootstrap_samples,
            block_days=config.gate.bootstrap_block_days,
            seed=config.training.seed,
        ),
        timeline=diag.timeline(market, bars),
        rolling=diag.rolling(
            y,
            candidate.pred,
            regimes,
            days,
            window_days=diag.ROLLING_WINDOW_DAYS,
            min_n=diag.ROLLING_MIN_ROWS,
        ),
    )


def model_scores(scores: Scores, fit_seconds: float | None) -> ModelScores:
    """A model's (or a reference's) row of the report's validation."""
    table = ScoreTable.of(scores)
    overall = table.total
    return ModelScores(overall.accuracy, overall.balanced_accuracy, fit_seconds, table.per_regime)
