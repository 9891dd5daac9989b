"""Retrains simulated over a history, gate included: how often does the gate promote noise?

At every cutoff (every `every_weeks` weeks from `start`), a retrain sees what a daemon would
have stored by then -- the live rows whose label is known before the cutoff, and the archive of
the events known by then (`daemon.evaluation.data.fold_at`) -- and runs the trainer's steps on
them: the time split with purge and embargo (`split_samples`), the inner holdout, regime-balanced
sampling, regime weights, the base models, the validated soft vote, and the gate
(`daemon.training.gate`) against the naive references and the champion of its track.

Two tracks run side by side, each with its own champion: `real`, trained on the true labels,
and `shuffled`, trained on the same rows with their training labels permuted (validation keeps
the true labels). A shuffled-label candidate has nothing to learn, so every promotion of one is
the gate promoting noise. For each promoted candidate that replaced a champion, both are scored
on the bars of the next `horizon_weeks` weeks: did the promotion help?
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.evaluation.data import Dataset, Fold, build_dataset, fold_at, load_default
from daemon.pipeline.features.defs import FEATURE_NAMES
from daemon.registry.ensemble import Ensemble
from daemon.training.ensemble import inner_holdout, voted
from daemon.training.fitting import fit_model
from daemon.training.gate import Predictor, decide, gather
from daemon.training.refit import sampled
from daemon.training.rivals import calls
from daemon.training.scoring import baseline_predictions, baseline_probabilities, point

__all__ = ["TRACKS", "Simulated", "Simulation", "SimulationSettings", "simulate"]

logger = logging.getLogger(__name__)

Track = Literal["real", "shuffled"]
TRACKS: tuple[Track, ...] = ("real", "shuffled")
Labels = npt.NDArray[np.int8]


@dataclass(frozen=True)
class SimulationSettings:
    """The cutoffs (every `every_weeks` weeks from `start`, before `end`), the weeks each
    promotion is followed for, and the base models of the vote (`Config().models` gives their
    hyper-parameters). `n_jobs` threads per fit."""

    start: dt.date = dt.date(2004, 1, 1)
    end: dt.date = dt.date(2019, 1, 1)
    every_weeks: int = 8
    horizon_weeks: int = 13
    models: tuple[str, ...] = ("lightgbm", "logistic_regression")
    n_jobs: int = 1

    def cutoffs(self) -> list[dt.date]:
        step = dt.timedelta(weeks=self.every_weeks)
        out, day = [], self.start
        while day < self.end:
            out.append(day)
            day += step
        return out


@dataclass(frozen=True)
class Simulated:
    """One retrain of one track: the gate's rule and reason, its edge over the best naive
    reference, and -- when it replaced a champion -- candidate minus champion on the gate
    metric over the next weeks' bars (`next_rows` of them)."""

    cutoff: str
    track: Track
    promoted: bool
    rule: str
    reason: str
    edge: tuple[float, float, float] | None
    had_champion: bool
    next_rows: int = 0
    next_difference: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff,
            "track": self.track,
            "promoted": self.promoted,
            "rule": self.rule,
            "reason": self.reason,
            "edge": None if self.edge is None else list(self.edge),
            "had_champion": self.had_champion,
            "next_rows": self.next_rows,
            "next_difference": self.next_difference,
        }


@dataclass(frozen=True)
class Simulation:
    """Every simulated retrain, in cutoff order, both tracks."""

    retrains: list[Simulated]
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per track: retrains, promotions, the rules that decided, and for promotions that
        replaced a champion their mean difference over the next weeks."""
        out: dict[str, dict[str, Any]] = {}
        for track in TRACKS:
            runs = [r for r in self.retrains if r.track == track]
            promoted = [r for r in runs if r.promoted]
            replaced = [r.next_difference for r in promoted if r.next_difference is not None]
            rules: dict[str, int] = {}
            for r in runs:
                rules[r.rule] = rules.get(r.rule, 0) + 1
            out[track] = {
                "retrains": len(runs),
                "promoted": len(promoted),
                "promoted_share": round(len(promoted) / len(runs), 4) if runs else None,
                "rules": rules,
                "replaced_champion": len(replaced),
                "next_mean_difference": round(float(np.mean(replaced)), 4) if replaced else None,
            }
        return out


def simulate(
    config: Config,
    settings: SimulationSettings,
    data: Dataset | None = None,
    progress: Callable[[int, int, dt.date], None] | None = None,
) -> Simulation:
    """Simulate both tracks' retrains at every cutoff of `settings` over `data` (default: the
    bundled history). Cutoffs without enough history to split are skipped (logged)."""
    from daemon.errors import RegimedError
    from daemon.training.split import split_samples

    started = time.perf_counter()
    data = data or build_dataset(config, load_default())
    cache: dict[tuple[int, ...], npt.NDArray[np.int64]] = {}
    champions: dict[Track, Ensemble | None] = dict.fromkeys(TRACKS)
    out: list[Simulated] = []
    horizon = dt.timedelta(weeks=settings.horizon_weeks)
    cutoffs = settings.cutoffs()
    for k, cutoff in enumerate(cutoffs):
        if progress is not None:
            progress(k, len(cutoffs), cutoff)
        fold = fold_at(data, config, cutoff, cutoff + horizon, cache)
        rows, meta = _stored(data, config, fold)
        try:
            split = split_samples(meta, config.training, config.label, config.archive.events)
        except RegimedError as exc:
            logger.info("cutoff %s skipped: %s", cutoff, exc)
            continue
        for track in TRACKS:
            y = data.y[rows].copy()
            if track == "shuffled":
                rng = np.random.default_rng([config.training.seed, k])
                y[split.train] = y[rng.permutation(split.train)]
            try:
                ensemble = _fit(data, config, settings, rows, y, split.train)
            except RegimedError as exc:
                logger.info("cutoff %s, %s: no candidate: %s", cutoff, track, exc)
                continue
            out.append(
                _judge(
                    data,
                    config,
                    rows,
                    split.train,
                    split.validation,
                    fold,
                    cutoff,
                    track,
                    ensemble,
                    champions,
                )
            )
    return Simulation(
        out,
        round(time.perf_counter() - started, 1),
        {
            "start": settings.start.isoformat(),
            "end": settings.end.isoformat(),
            "every_weeks": settings.every_weeks,
            "horizon_weeks": settings.horizon_weeks,
            "models": list(settings.models),
            "metric": config.gate.metric,
            "min_edge": config.gate.min_edge,
            "tolerance": config.gate.tolerance,
            "min_regime_rows": config.gate.min_regime_rows,
            "bootstrap_samples": config.gate.bootstrap_samples,
            "rows": len(data),
        },
    )


def _stored(data: Dataset, config: Config, fold: Fold) -> tuple[npt.NDArray[np.int64], Any]:
    """The rows a daemon would hold at the fold's cutoff (live, then archive: the archive
    repeats live rows, as in production) as positions into `data`, and their sample frame in
    the shape `Store.read_samples` gives `split_samples`."""
    rows = np.concatenate([fold.train, fold.archive]).astype(np.int64)
    source = np.array(["live"] * len(fold.train) + ["archive"] * len(fold.archive), dtype=object)
    event = np.full(len(rows), None, dtype=object)
    days = data.days[rows]
    for spec in config.archive.events:
        if spec.name in fold.events:
            inside = (source == "archive") & (days >= np.datetime64(spec.start, "D"))
            event[inside & (days <= np.datetime64(spec.end, "D"))] = spec.name
    meta = pd.DataFrame(
        {
            "ts": pd.to_datetime(days),
            "source": source,
            "regime": data.regimes[rows].astype(object),
            "event": event,
        }
    )
    return rows, meta


def _fit(
    data: Dataset,
    config: Config,
    settings: SimulationSettings,
    rows: npt.NDArray[np.int64],
    y: Labels,
    train: npt.NDArray[np.intp],
) -> Ensemble:
    """The candidate as the trainer makes it from the training part (positions into `rows`)."""
    days, regimes, X = data.days[rows], data.regimes[rows], data.X[rows]
    fit_rows, hold_rows = inner_holdout(
        days,
        np.asarray(train, dtype=np.int64),
        config.label.horizon_bars,
        config.training.ensemble_holdout_fraction,
    )
    fit = sampled(config, regimes, fit_rows)
    chosen = fit.rows
    models = {
        name: fit_model(
            name,
            X[chosen],
            y[chosen],
            fit.weights,
            config.models,
            n_jobs=settings.n_jobs,
            seed=config.training.seed,
        )
        for name in settings.models
    }
    return voted(models, X[hold_rows], y[hold_rows])[0]


def _judge(
    data: Dataset,
    config: Config,
    rows: npt.NDArray[np.int64],
    train: npt.NDArray[np.intp],
    val: npt.NDArray[np.intp],
    fold: Fold,
    cutoff: dt.date,
    track: Track,
    ensemble: Ensemble,
    champions: dict[Track, Ensemble | None],
) -> Simulated:
    """Gate the candidate against the references and its track's champion on the validation
    rows (true labels); follow a promotion over the fold's test bars."""
    h = config.label.horizon_bars
    y_true = data.y[rows]
    X = data.X[rows]
    naive = baseline_predictions(y_true[train], X[val], FEATURE_NAMES, h, config.label.key)
    naive_proba = baseline_probabilities(y_true[train], X[train], X[val], FEATURE_NAMES, h)
    references = {name: Predictor(p, naive_proba[name]) for name, p in naive.items()}
    champion = champions[track]
    evidence, _ = gather(
        y_true[val],
        data.days[rows][val],
        data.regimes[rows][val].astype(str),
        calls(ensemble, X[val]),
        None if champion is None else calls(champion, X[val]),
        references,
        config.gate,
        min_n=config.training.min_score_samples,
        seed=config.training.seed,
        target=config.label.key,
    )
    decision = decide(evidence, config.gate)
    edge = evidence.edge
    result = Simulated(
        cutoff=cutoff.isoformat(),
        track=track,
        promoted=decision.promoted,
        rule=decision.rule,
        reason=decision.reason,
        edge=None if edge is None else (edge.difference, edge.low, edge.high),
        had_champion=champion is not None,
    )
    if not decision.promoted:
        return result
    champions[track] = ensemble
    if champion is None or not len(fold.test):
        return result
    y_next, X_next = data.y[fold.test], data.X[fold.test]
    new, old = calls(ensemble, X_next), calls(champion, X_next)
    metric = config.gate.metric
    ours = point(metric, y_next, new.pred, new.proba)
    theirs = point(metric, y_next, old.pred, old.proba)
    difference = None if ours is None or theirs is None else round(ours - theirs, 4)
    return dataclasses.replace(result, next_rows=len(fold.test), next_difference=difference)
