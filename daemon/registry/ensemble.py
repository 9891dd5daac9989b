"""The ensemble as it scores rows: the soft vote of the base models (`SoftVote`), the fitted
models with their vote (`Ensemble`), and the one way a base model's probability of an up move is
read (`positive_proba`). The trainer builds an `Ensemble` from the models it fitted, the registry
from the models of a bundle (daemon.registry.serving); how the vote is weighted is the
trainer's business (daemon.training.ensemble, docs/training.md).

Inputs are the stored float32 feature rows. The feature engine emits a row only when every
feature is defined, so the rows hold no NaN; the float32 packing of the store can still turn a
value beyond float32's range into an infinity (only absurd prices do that). Rather than let one
such row fail a retrain, or let the tree models read it while the scaled models crash on it,
both fitting (daemon.training.fitting.fit_model) and `positive_proba` replace NaN with 0 and clip
every value to +-`FEATURE_LIMIT` (`finite_features`), and log how many values they changed
(none, for real data: the largest feature magnitude in the bundled histories is the VIX level,
about 100).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from daemon.errors import RegimedError

__all__ = ["FEATURE_LIMIT", "Ensemble", "SoftVote", "finite_features", "positive_proba"]

logger = logging.getLogger(__name__)

#: A fitted or unfitted model: a scikit-learn-style classifier (the libraries are untyped).
Model: TypeAlias = Any
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

#: Feature values are clipped to +-this before a fit or a prediction (see the module docstring).
FEATURE_LIMIT = 1e6


def positive_proba(model: Model, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """P(label = 1) for each row of `X` under a fitted base model, as float64.

    The one place that reads probabilities: every base model is a scikit-learn-style classifier
    whose `predict_proba` columns follow `classes_`; XGBoost answers in float32.
    """
    classes = [int(c) for c in model.classes_]
    if 1 not in classes:
        raise ValueError(f"{type(model).__name__} was fitted without class 1 (classes {classes})")
    x = finite_features(X, what=f"{type(model).__name__}: scored rows")
    proba = np.asarray(model.predict_proba(x))
    return np.ascontiguousarray(proba[:, classes.index(1)], dtype=np.float64)


def finite_features(X: npt.ArrayLike, *, what: str = "features") -> FloatArray:
    """`X` as a 2-D float array with NaN replaced by 0 and values clipped to +-`FEATURE_LIMIT`.

    Returns `X` itself (no copy) when nothing needs replacing, which is the case for every row
    the feature engine emits; otherwise logs a warning naming `what` and the first bad column.
    """
    x: FloatArray = np.asarray(X)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D feature matrix, got shape {x.shape}")
    bad = ~(np.abs(x) <= FEATURE_LIMIT)  # NaN compares false
    if not bad.any():
        return x
    n_nan = int(np.isnan(x).sum())
    column = int(np.flatnonzero(bad.any(axis=0))[0])
    logger.warning(
        "%s: %d NaN replaced by 0 and %d values beyond +-%g clipped (first in column %d)",
        what,
        n_nan,
        int(bad.sum()) - n_nan,
        FEATURE_LIMIT,
        column,
    )
    return np.clip(np.nan_to_num(x, nan=0.0), -FEATURE_LIMIT, FEATURE_LIMIT)


@dataclass(frozen=True)
class SoftVote:
    """Model name -> weight (summing to 1); a row is "up" when the weighted probability of up
    exceeds `threshold`."""

    weights: dict[str, float]
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.weights:
            raise RegimedError("an ensemble needs at least one model")
        total = sum(self.weights.values())
        if any(w < 0 for w in self.weights.values()) or abs(total - 1.0) > 1e-9:
            raise RegimedError(f"ensemble weights {self.weights}: expected >= 0, summing to 1")

    def proba(self, probas: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        """The weighted probability of up, from each model's probability of up."""
        missing = sorted(set(self.weights) - set(probas))
        if missing:
            raise RegimedError(f"ensemble: no probabilities for {', '.join(missing)}")
        out = np.zeros_like(next(iter(probas.values())), dtype=np.float64)
        for name, weight in self.weights.items():
            if weight:
                out += weight * np.asarray(probas[name], dtype=np.float64)
        return out

    def predict(self, probas: Mapping[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.int8]:
        """0/1 predictions of the vote."""
        return (self.proba(probas) > self.threshold).astype(np.int8)

    def as_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoftVote:
        return cls({str(k): float(v) for k, v in data["weights"].items()}, float(data["threshold"]))


class Ensemble:
    """Fitted base models and their vote: what scores live rows and validation sets."""

    def __init__(self, models: Mapping[str, Any], vote: SoftVote) -> None:
        missing = sorted(set(vote.weights) - set(models))
        if missing:
            raise RegimedError(f"ensemble: the vote names models that are absent: {missing}")
        self.models = dict(models)
        self.vote = vote

    def model_probas(self, X: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float64]]:
        """Each base model's probability of up."""
        return {name: positive_proba(model, X) for name, model in self.models.items()}

    def proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The ensemble's probability of up for each row of X."""
        return self.vote.proba(self.model_probas(X))
