"""The refit: after the gate promotes a candidate, its members are fitted again on every
labelled row, so the model that serves has seen the latest data.

A retrain fits the members on the oldest part of the training rows, weighs the vote on the
newest part of them (the inner holdout) and validates on the newest live rows: fitted as
validated, the champion would never see the most recent ~36% of its window. Once the gate has
decided, those holdouts have done their work; the refit fits each member again, with the same
hyper-parameters, seed, regime-balanced sampling and regime loss weights, on every row the
retrain may use, and keeps the validated vote weights (`refit_members`).

Which rows: every labelled live row, and every archive row dated on or before the last
labelled live day (`refit_rows`). Of the split's purges (daemon.training.split) only the time
limit still means something: a row whose label would reach past the newest live bar does not
train, as an archive row after `train_end` does not today. The gaps that keep training labels
out of the vote holdout and the validation period, and the purge around held-out archive
events, protect a measurement; the refit measures nothing, so those rows train too.

The gate keeps judging the validated members: the bundle keeps them beside the refit ones
(daemon.registry.bundle.VALIDATED), and a later candidate is compared with them
(daemon.training.rivals), never with members that saw its validation rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.errors import RegimedError
from daemon.registry.ensemble import Ensemble
from daemon.training.report_sections import Window
from daemon.training.sampling import SampleMix, balance, row_weights

if TYPE_CHECKING:
    from daemon.training.cluster import Cluster

__all__ = ["Refit", "Sampled", "refit_members", "refit_rows", "sampled", "window"]

logger = logging.getLogger(__name__)

Index = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sampled:
    """The rows a fit takes (positions, repeated where oversampled), their loss weights (None:
    unweighted) and what balancing did (None: not balanced)."""

    rows: Index
    weights: npt.NDArray[np.float64] | None
    mix: SampleMix | None


def sampled(
    config: Config,
    regimes: npt.NDArray[np.str_],
    rows: Index,
    *,
    balancing: bool = True,
    weights: bool = True,
) -> Sampled:
    """`rows` (positions into `regimes`) drawn to the target regime mix (`[sampling]`) and
    weighted by regime (`[weights]`), as every fit of a retrain takes them."""
    mix = None
    if balancing:
        mix = balance(
            list(regimes[rows]),
            config.sampling.target_mix.as_dict(),
            config.sampling.seed,
            config.sampling.output_size or None,
        )
        rows = rows[mix.indices]
    w = row_weights(list(regimes[rows]), config.weights.regime.as_dict()) if weights else None
    return Sampled(rows, w, mix)


def refit_rows(meta: pd.DataFrame) -> Index:
    """Every row of `meta` (labelled samples, as the trainer reads them) a refit may take:
    the live rows, and the archive rows dated on or before the last live day."""
    days = meta["ts"].to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    live = (meta["source"].astype(object) == "live").to_numpy(dtype=bool)
    if not live.any():
        return np.flatnonzero(live)
    return np.flatnonzero(live | (days <= days[live].max()))


def window(days: npt.NDArray[np.datetime64], rows: npt.ArrayLike) -> Window:
    """The first and last day of `rows` (positions into `days`) and their number."""
    picked = days[np.asarray(rows, dtype=np.int64)]
    if not len(picked):
        return Window(None, None, 0)
    return Window(_day(picked.min()), _day(picked.max()), len(picked))


def _day(value: Any) -> str:
    return str(np.datetime64(value, "D"))


@dataclass(frozen=True)
class Refit:
    """The refit ensemble (None when a member could not be refit: the validated members then
    serve), each member's fit seconds and, on failure, why."""

    ensemble: Ensemble | None
    fit_seconds: Mapping[str, float]
    error: str | None = None


def refit_members(
    config: Config,
    validated: Ensemble,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    fit: Sampled,
    progress: Callable[[str, Mapping[str, Any]], None],
    cluster: Cluster | None = None,
) -> Refit:
    """Each member of `validated` fitted again on the sampled rows `fit` of `X`, `y` (as
    `fit_all` fits them: same hyper-parameters, seed and threads, on `cluster` when there is
    one), under the validated vote.

    A member that fails now (it fitted on fewer rows) leaves every member as validated: the
    vote was weighed on those, and half a refit would serve an ensemble nobody validated.
    """
    from daemon.training.fitting import fit_all

    names: Sequence[str] = tuple(validated.models)
    try:
        models, seconds, failed = fit_all(
            config,
            X[fit.rows],
            y[fit.rows],
            fit.weights,
            progress,
            names=names,
            optional=names,
            cluster=cluster,
            stage="refit",
        )
    except RegimedError as exc:  # every member failed
        return Refit(None, {}, str(exc))
    if failed:
        why = "; ".join(f"{name}: {error}" for name, error in failed.items())
        logger.warning("the refit failed, the validated members serve: %s", why)
        return Refit(None, seconds, why)
    return Refit(Ensemble(models, validated.vote), seconds)
