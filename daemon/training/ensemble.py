"""The ensemble: a soft vote of the base models, weighted by their validated edge over chance.

Why a weighted soft vote and not stacking: a stacker needs out-of-fold probabilities of every
base model, that is k more fits of all eight, which the two-minute retrain budget does not have;
and on market direction, where the best models sit a few points above chance, a meta-model
fitted on those probabilities mostly learns noise. The vote's weights are measured instead on the
most recent part of the training data (`training.ensemble_holdout_fraction`, never the gate's
validation set): each model weighs by how far its balanced accuracy there exceeds 0.5, so a
model no better than a coin toss has no vote. When no model beats chance the vote is equal.
docs/training.md has the whole argument. This module measures the weights; the vote itself and the
`Ensemble` that scores rows with it are in daemon.registry.ensemble, which serving uses too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.errors import RegimedError
from daemon.registry.ensemble import Ensemble, SoftVote


def vote_weights(holdout_balanced_accuracy: Mapping[str, float | None]) -> dict[str, float]:
    """Weights proportional to each model's balanced accuracy above 0.5 on the holdout; equal
    weights when none is above (or none could be measured)."""
    if not holdout_balanced_accuracy:
        raise RegimedError("an ensemble needs at least one model")
    edge = {m: max((s or 0.0) - 0.5, 0.0) for m, s in holdout_balanced_accuracy.items()}
    total = sum(edge.values())
    if total <= 0:
        n = len(edge)
        return dict.fromkeys(edge, 1.0 / n)
    return {m: e / total for m, e in edge.items()}


def inner_holdout(
    days: npt.NDArray[Any],
    train: npt.NDArray[np.int64],
    horizon_bars: int,
    fraction: float,
    hint: str = "",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Split the training rows `train` (indices into `days`) by time: the most recent
    `fraction` of their days weighs the vote, the earlier part is what the models fit, with
    `horizon_bars` days purged between so no fitted label reaches into the holdout.

    `hint` ends the error raised when the days are too few (what the caller can change)."""
    d = days[train]
    calendar = np.unique(d)
    h = horizon_bars
    k = round(len(calendar) * (1 - fraction))
    if k - h < 1 or k >= len(calendar):
        raise RegimedError(
            f"the training part spans {len(calendar)} days: too few for an ensemble holdout "
            f"of {fraction} with a {h}-bar purge{hint}"
        )
    return train[d < calendar[k - h]], train[d >= calendar[k]]


def holdout_scores(
    probas: Mapping[str, npt.NDArray[np.float64]], y: npt.NDArray[np.int8]
) -> dict[str, float | None]:
    """Each model's balanced accuracy on the holdout labels `y` from its probabilities of up;
    None for every model when the holdout is empty or holds one class only."""
    from sklearn.metrics import balanced_accuracy_score

    if not len(y) or len(np.unique(y)) < 2:
        return dict.fromkeys(probas)
    return {
        name: float(balanced_accuracy_score(y, (p > 0.5).astype(np.int8)))
        for name, p in probas.items()
    }


def voted(
    models: Mapping[str, Any], X_hold: npt.NDArray[np.float32], y_hold: npt.NDArray[np.int8]
) -> tuple[Ensemble, dict[str, float | None]]:
    """The ensemble of `models` with the soft vote weighted by each model's balanced accuracy
    on the inner holdout (`X_hold`, `y_hold`; equal weights when it has no rows), and those
    holdout scores. The scores are rounded to 6 places, so the weights (and so the model) do
    not hang on the last float bits."""
    probe = Ensemble(models, SoftVote(dict.fromkeys(models, 1.0 / len(models))))
    probas = probe.model_probas(X_hold) if len(X_hold) else {}
    measured = holdout_scores(probas, y_hold) if probas else dict.fromkeys(models)
    scores = {name: None if s is None else round(s, 6) for name, s in measured.items()}
    return Ensemble(models, SoftVote(vote_weights(scores))), scores
