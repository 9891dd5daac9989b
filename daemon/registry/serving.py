"""Loading a registered model back into an `Ensemble`: the champion that scores live rows and
that every candidate is compared with. The artifact's hashes and permissions are checked on
every load (daemon.registry.artifacts); a refused artifact raises and sends an alert to the
`alert` callback, when the caller hands one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.config import Config
from daemon.errors import RegimedError
from daemon.pipeline.features.defs import FEATURE_VERSION
from daemon.registry.ensemble import Ensemble, SoftVote
from daemon.registry.versions import AlertSink, ModelRecord, Registry
from daemon.store.sqlite import Store


@dataclass(frozen=True)
class LoadedModel:
    """A registered model, loaded and ready to score: `ensemble` scores live rows (the refit
    members, when the model was refit); `validated` is the ensemble the gate validated, which a
    later candidate is compared with (the served one, for a bundle without a validated part:
    not refit, or written before refits existed)."""

    record: ModelRecord
    ensemble: Ensemble
    feature_version: int
    meta: Mapping[str, Any]
    validated: Ensemble


def load_model(
    config: Config, store: Store, version: str | None = None, *, alert: AlertSink | None = None
) -> LoadedModel:
    """Load `version` (default: the champion), verified against the registry's sha256; a
    refused artifact raises ArtifactError and sends an alert to `alert`."""
    record, bundle = Registry(store, alert=alert).load(version, config.models.trusted_types())
    meta = bundle.meta
    try:
        vote = SoftVote.from_dict(meta["vote"])
        feature_version = int(meta["feature_version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegimedError(
            f"model {record.version}: the manifest in {record.path} lacks a valid {exc}"
        ) from None
    served = Ensemble(bundle.models, vote)
    validated = Ensemble(bundle.validated, vote) if bundle.validated else served
    return LoadedModel(record, served, feature_version, meta, validated)


def load_champion(
    config: Config, store: Store, *, alert: AlertSink | None = None
) -> LoadedModel | None:
    """The champion, or None before the first promotion or when it was trained on another
    feature layout or for another `label.target` (its report names the target; it cannot
    score these rows; the gate then falls back to the naive references and says so)."""
    record = Registry(store).champion()
    if record is None:
        return None
    target = record.report.get("target")
    if isinstance(target, str) and target != config.label.key:
        return None
    loaded = load_model(config, store, alert=alert)
    if loaded.feature_version != FEATURE_VERSION:
        return None
    return loaded
