"""Live scoring: the champion scores every new live feature row, the prediction is scored when
its label arrives, and the rows feed the drift monitor.

Runs on the consumer thread, inside the batch: `score(out)` turns the batch's new live samples
into prediction rows that are written in the same SQLite transaction as the samples, and
`matured(out)` scores the predictions whose labels the batch completed. Rolling accuracy and
balanced accuracy per regime cover the last `drift.live_window` scored rows of that regime.

A champion whose artifact is refused (tampered, wrong permissions) is retried with a capped
exponential backoff (daemon.domain.Backoff, as every retry of the daemon), and reported through
`on_refused` (the daemon's deduplicated alerts) instead of the registry's own alert at every
try.

The champion is looked up in the registry every `CHAMPION_POLL_S` seconds, so a model promoted
by the daemon's own retrain, by `regimed retrain` from the command line or by
`regimed models promote` takes over within seconds (a hot swap: the next batch uses it). Before
any promotion there is no champion: nothing is scored, and `status` and the metrics say so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.config import Config
from daemon.domain import REGIMES, Backoff, PredictionRow, SampleRow
from daemon.errors import RegimedError
from daemon.monitor.alerts import send_alert
from daemon.monitor.drift import DriftCheck, DriftMonitor, DriftTrigger, ErrorStream, Reference
from daemon.registry.serving import LoadedModel, load_champion
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store

if TYPE_CHECKING:
    from daemon.pipeline.engine import Output

logger = logging.getLogger(__name__)

#: How often the registry is asked which version is champion.
CHAMPION_POLL_S = 5.0
#: A champion whose artifact was refused is tried again after CHAMPION_POLL_S, doubled at
#: every refusal up to this (another version promoted meanwhile is still taken at once).
CHAMPION_RETRY_CAP_S = 600.0


@dataclass
class RegimeWindow:
    """The last `size` scored (label, prediction) pairs of one regime."""

    size: int
    pairs: deque[tuple[int, int]] = field(default_factory=deque)
    scored: int = 0

    def add(self, label: int, prediction: int) -> None:
        self.pairs.append((label, prediction))
        self.scored += 1
        while len(self.pairs) > self.size:
            self.pairs.popleft()

    def accuracy(self) -> float | None:
        if not self.pairs:
            return None
        return sum(y == p for y, p in self.pairs) / len(self.pairs)

    def balanced_accuracy(self) -> float | None:
        """Mean recall of up and of down; None while the window holds one label only."""
        up = [p for y, p in self.pairs if y == 1]
        down = [p for y, p in self.pairs if y == 0]
        if not up or not down:
            return None
        return (sum(up) / len(up) + sum(1 - p for p in down) / len(down)) / 2


@dataclass(frozen=True)
class DriftOutcome:
    """One drift check, whether ADWIN saw the error rate rise, and what the trigger did
    (None, "started", "skipped_busy" or "suppressed_cooldown")."""

    check: DriftCheck
    concept_drift: bool
    trigger: str | None


class LiveScorer:
    """Scores live rows with the champion and keeps per-regime live accuracy and drift."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        on_drift: Callable[[str], bool] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        load: Callable[[Config, Store], LoadedModel | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.on_drift = on_drift
        self.on_refused = on_refused
        self._load = load
        self._clock = clock
        self.model: LoadedModel | None = None
        self.version: str | None = None
        self._checked_at = -float("inf")
        size = config.drift.live_window
        self.windows = {r: RegimeWindow(size) for r in REGIMES}
        self.pending: dict[tuple[str, str], tuple[int, str]] = {}
        self.monitor = DriftMonitor(None, config.drift)
        self.errors = ErrorStream(config.drift.adwin_delta)
        self.trigger = DriftTrigger(config.drift)
        self.last_check: DriftCheck | None = None
        self.load_failures = 0
        #: The version last refused and when to try it again; the pause doubles at every
        #: refusal of the same version in a row.
        self._refused: tuple[str, float] | None = None
        self._retry = Backoff(CHAMPION_POLL_S, CHAMPION_RETRY_CAP_S)

    # -- the champion ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Look up the champion (at most every CHAMPION_POLL_S seconds unless `force`); load it
        when it changed. True when a new model took over."""
        now = self._clock()
        if not force and now - self._checked_at < CHAMPION_POLL_S:
            return False
        self._checked_at = now
        record = Registry(self.store).champion()
        version = None if record is None else record.version
        if version == self.version:
            return False
        if self._refused is not None and self._refused[0] == version and now < self._refused[1]:
            return False
        if record is None:
            self.model, self.version = None, None
            return True
        try:
            loaded = self._load_champion()
        except RegimedError as exc:
            # Keep scoring with the model we have; try this one again after a backoff.
            self.load_failures += 1
            assert version is not None
            if self._refused is None or self._refused[0] != version:
                self._retry.reset()
            delay = self._retry.next()
            self._refused = (version, now + delay)
            logger.error(
                "cannot load champion %s, keeping %s (next try in %.0f s): %s",
                version,
                self.version,
                delay,
                exc,
            )
            if self.on_refused is not None:
                self.on_refused(version, str(exc))
            return False
        self._refused = None
        if loaded is None:
            logger.warning(
                "champion %s was trained on another feature layout or for another label target "
                "than label.target %s: it cannot score live rows",
                version,
                self.config.label.key,
            )
            self.model, self.version = None, version
            return True
        self._swap(loaded)
        return True

    def _load_champion(self) -> LoadedModel | None:
        if self._load is not None:
            return self._load(self.config, self.store)
        # With `on_refused` the caller alerts (deduplicated), not the registry at every try.
        alert = None if self.on_refused is not None else partial(send_alert, self.config.alerts)
        return load_champion(self.config, self.store, alert=alert)

    def _swap(self, loaded: LoadedModel) -> None:
        previous = self.version
        self.model, self.version = loaded, loaded.record.version
        reference = loaded.meta.get("drift_reference")
        self.monitor.set_reference(None if reference is None else Reference.from_dict(reference))
        self.trigger.reset()
        self.pending = self._stored_pending(self.version)
        logger.info(
            "champion %s takes over live scoring (%s)",
            self.version,
            "the first one" if previous is None else f"was {previous}",
        )

    def _stored_pending(self, version: str) -> dict[tuple[str, str], tuple[int, str]]:
        """Predictions of `version` still waiting for their label (after a restart)."""
        with self.store.transaction("read pending predictions", write=False) as conn:
            rows = conn.execute(
                "SELECT symbol, ts, prediction, regime FROM predictions "
                "WHERE model_version = ? AND label IS NULL AND regime IS NOT NULL",
                (version,),
            ).fetchall()
        return {(s, t): (int(p), str(r)) for s, t, p, r in rows}

    # -- per batch ---------------------------------------------------------------------------

    def score(self, samples: Iterable[SampleRow]) -> list[PredictionRow]:
        """Predictions of the champion for the batch's new live rows (empty without one)."""
        live = [s for s in samples if s.source == "live"]
        if not live:
            return []
        X = np.vstack([s.features for s in live]).astype(np.float32, copy=False)
        return self.score_rows([(s.symbol, s.ts, s.regime, s.label) for s in live], X)

    def score_output(self, out: Output) -> list[PredictionRow]:
        """`score` of a pipeline batch's live samples, row objects and block alike."""
        rows = [(s.symbol, s.ts, s.regime, s.label) for s in out.samples if s.source == "live"]
        parts = [s.features for s in out.samples if s.source == "live"]
        X = np.vstack(parts).astype(np.float32, copy=False) if parts else None
        live = [k for k, row in enumerate(out.block.samples) if row[0] == "live"]
        if live:
            samples = out.block.samples
            rows += [(samples[k][1], samples[k][2], samples[k][3], samples[k][5]) for k in live]
            block_X = np.concatenate(out.block_features)
            if len(live) < len(samples):
                block_X = block_X[live]
            X = block_X if X is None else np.vstack([X, block_X])
        if X is None:
            return []
        return self.score_rows(rows, X)

    def score_rows(
        self, rows: list[tuple[str, str, str, int | None]], X: np.ndarray
    ) -> list[PredictionRow]:
        """Predictions for live rows given as (symbol, ts, regime, label) and their features."""
        self.monitor.observe(X, [regime for _, _, regime, _ in rows])
        if self.model is None or self.version is None:
            return []
        ensemble = self.model.ensemble
        proba = ensemble.proba(X)
        threshold = ensemble.vote.threshold
        out = []
        for (symbol, ts, regime, label), p in zip(rows, proba.tolist(), strict=True):
            prediction = int(p > threshold)
            self.pending[(symbol, ts)] = (prediction, regime)
            out.append(PredictionRow(symbol, ts, self.version, p, prediction, regime, label))
        return out

    def matured(self, labels: Iterable[tuple[str, str, int]]) -> Counter[str]:
        """Score the predictions whose (symbol, ts, label) arrived; how many per regime."""
        errors = []
        scored: Counter[str] = Counter()
        for symbol, ts, label in labels:
            hit = self.pending.pop((symbol, ts), None)
            if hit is None:
                continue
            prediction, regime = hit
            self.windows[regime].add(label, prediction)
            scored[regime] += 1
            errors.append(int(prediction != label))
        if errors:
            self.errors.update(errors)
        return scored

    def check_drift(self) -> DriftOutcome:
        """One drift check (the daemon runs one per market-symbol trading day). When the
        trigger fires, `on_drift(reason)` starts a retrain; it returns False when one is
        already running, and the trigger counts that as skipped."""
        check = self.monitor.check()
        self.last_check = check
        concept = self.errors.take_alarm()
        outcome = DriftOutcome(check, concept, None)
        if not check.ready and not concept:
            return outcome
        suppressed = self.trigger.suppressed_cooldown
        if self.trigger.update(check.score if check.ready else float("nan"), concept):
            logger.warning(
                "drift retrain: %s (score %.3f, top features %s)",
                self.trigger.last_reason,
                check.score,
                ", ".join(f"{f} {v:.2f}" for f, v in check.top(3)),
            )
            started = self.on_drift is None or self.on_drift(
                self.trigger.last_reason or "feature_drift"
            )
            if not started:
                self.trigger.note_busy()
            return DriftOutcome(check, concept, "started" if started else "skipped_busy")
        if self.trigger.suppressed_cooldown > suppressed:
            return DriftOutcome(check, concept, "suppressed_cooldown")
        return outcome

    # -- for metrics and status ---------------------------------------------------------------

    def live_scores(self) -> Mapping[str, dict[str, Any]]:
        """Per regime: rolling accuracy, balanced accuracy, rows in the window, rows scored."""
        return {
            r: {
                "accuracy": w.accuracy(),
                "balanced_accuracy": w.balanced_accuracy(),
                "window": len(w.pairs),
                "scored": w.scored,
            }
            for r, w in self.windows.items()
        }


def labels_of(out: Output) -> list[tuple[str, str, int]]:
    """The (symbol, ts, label) of the live labels a batch completed."""
    labels = [(u.symbol, u.ts, u.label) for u in out.labels if u.source == "live"]
    labels += [(symbol, ts, label) for source, symbol, ts, label in out.block.labels
               if source == "live"]  # fmt: skip
    return labels + out.settled
