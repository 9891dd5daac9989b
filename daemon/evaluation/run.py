"""`evaluate`: the whole walk-forward evaluation, from histories to the results document."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from daemon.config import Config
from daemon.config.evaluate import EvaluateConfig
from daemon.errors import UsageError
from daemon.evaluation.data import build_dataset, folds, load_default
from daemon.evaluation.results import EvaluationDocument, Timeline
from daemon.evaluation.walk import NAIVE, VARIANTS, Progress, run_folds, summarize, timeline
from daemon.training.archive import Histories
from daemon.training.cluster import open_cluster

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """The results document (`regimed evaluate --json`) and the per-day series the report's
    cumulative-accuracy plot draws."""

    doc: EvaluationDocument
    timeline: Timeline


def evaluate(
    config: Config,
    settings: EvaluateConfig,
    histories: Histories | None = None,
    *,
    end: dt.date | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Walk forward over `histories` (default: the bundled history) from `settings.start`,
    retraining every `settings.step`, and score every variant on the test bars of all folds.

    Raises UsageError when no fold has a test bar (start after the data, end before start).
    """
    started = time.perf_counter()
    histories = histories or load_default()
    data = build_dataset(config, histories)
    plan = folds(data, config, settings, end)
    if not plan:
        first, last = data.days.min(), data.days.max()
        raise UsageError(
            f"evaluate.start = {settings.start}: no test bar between it and "
            f"{end or last} (the data has labelled bars {first}..{last})"
        )
    logger.info(
        "evaluate: %d samples, %d folds from %s, models %s",
        len(data),
        len(plan),
        plan[0].cutoff,
        ", ".join(settings.models),
    )
    with open_cluster(config) as cluster:  # None: training.dask_scheduler is empty
        if cluster is not None and cluster.client is not None:
            logger.info("evaluate: fitting on the Dask cluster %s", cluster.address)
        predictions = run_folds(data, plan, config, settings, progress, cluster)
    results = summarize(data, predictions, config, settings)
    doc: EvaluationDocument = {
        "data": {
            "source": data.where,
            "symbols": sorted({str(s) for s in data.symbols}),
            "first_day": str(data.days.min()),
            "last_day": str(data.days.max()),
            "vix": None
            if histories.vix is None
            else [str(histories.vix.index[0].date()), str(histories.vix.index[-1].date())],
        },
        "settings": {
            "start": settings.start.isoformat(),
            "end": None if end is None else end.isoformat(),
            "step": settings.step,
            "models": list(settings.models),
            "horizon_bars": config.label.horizon_bars,
            "target": config.label.key,
            "bootstrap_samples": settings.bootstrap_samples,
            "block_days": settings.block_days,
            "min_score_samples": config.training.min_score_samples,
            "archive_budget": config.archive.budget,
            "refit": config.training.refit,
        },
        "variant_names": [v.name for v in VARIANTS],
        "naive_names": list(NAIVE),
        "variants": results["variants"],
        "differences": results["differences"],
        "controls": results["controls"],
        "folds": predictions.folds,
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    series = timeline(
        data, predictions, {n: predictions.preds[n] for n in ("baseline", "all", "always_up")}
    )
    return Evaluation(doc, series)
