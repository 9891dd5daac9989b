"""The models a candidate is judged against besides the naive references: the champion, or,
without one, the last registered candidate (so that a retrain on unchanged data does not
register the same rejected model again). Each is loaded from its verified artifact and asked
for its calls and probabilities on the validation rows.

A refit champion has seen every labelled row up to its retrain, so also the rows a later
candidate validates on: its served members would be judged in-sample. The rival is therefore
always the ensemble as it was validated (`LoadedModel.validated`, kept in the bundle beside the
refit; for a bundle without that part, the served members, which then are the validated
ones)."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from daemon.config import Config
from daemon.errors import ArtifactError, RegimedError
from daemon.pipeline.features.defs import FEATURE_VERSION
from daemon.registry.ensemble import Ensemble
from daemon.registry.serving import load_champion, load_model
from daemon.registry.versions import AlertSink, Registry
from daemon.store.sqlite import Store
from daemon.training.gate import Predictor

__all__ = ["calls", "champion_calls", "last_candidate_calls"]

logger = logging.getLogger(__name__)


def calls(ensemble: Ensemble, X: npt.NDArray[np.float32]) -> Predictor:
    """A loaded model's calls and probabilities of up on the rows X."""
    proba = ensemble.proba(X)
    return Predictor((proba > ensemble.vote.threshold).astype(np.int8), proba)


def champion_calls(
    config: Config, store: Store, X: npt.NDArray[np.float32], alert: AlertSink | None
) -> tuple[Predictor | None, str | None]:
    """The champion's calls and probabilities (None without a usable champion), and why it
    could not be used (None when it was, or there is none). A champion whose artifact is
    refused (tampered, wrong permissions) has already raised an alert through `alert`; the
    candidate is then judged against the naive references alone, so the service can recover
    with a verified model instead of failing every retrain."""
    try:
        loaded = load_champion(config, store, alert=alert)
    except ArtifactError as exc:
        logger.error("the champion cannot be loaded, judging without it: %s", exc)
        return None, str(exc)
    if loaded is None:
        return None, None
    return calls(loaded.validated, X), None


def last_candidate_calls(
    config: Config, store: Store, X: npt.NDArray[np.float32]
) -> tuple[str, Predictor] | None:
    """Without a champion: the last registered candidate (named as the gate's reason words
    it) and its predictions. None when there is none, or it cannot be loaded or score these
    rows (the gate then skips the rule)."""
    models = Registry(store).models()
    if not models:
        return None
    version = models[-1].version
    try:
        loaded = load_model(config, store, version)
    except RegimedError as exc:
        logger.warning("the last candidate %s cannot be loaded to compare with: %s", version, exc)
        return None
    if loaded.feature_version != FEATURE_VERSION:
        return None
    return f"those of the last candidate {version}", calls(loaded.validated, X)
