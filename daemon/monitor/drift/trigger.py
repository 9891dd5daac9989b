"""When drift starts a retrain: a debounce on the feature-drift score, the concept-drift
alarm, and a cooldown (`DriftTrigger`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Literal

from daemon.config.drift import DriftConfig

__all__ = ["DriftTrigger", "TriggerReason"]

TriggerReason = Literal["feature_drift", "concept_drift"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)



class DriftTrigger:
    """Decides when drift starts a retrain, with a debounce and a cooldown.

    `update` is called once per drift check with the check's score and whether the live error
    rate rose (`ErrorStream.take_alarm()`). It returns True when a retrain should start: the
    score has been above `drift.threshold` for `drift.sustain` consecutive checks, or (with
    `drift.concept_drift_triggers`) ADWIN saw the error rate rise; ADWIN already waits for
    significant evidence, so that needs no debounce. Either way at most one retrain per
    `drift.cooldown_hours`; a drift that persists fires again once the cooldown has passed.

    When `update` returned True but a retrain is already running, call `note_busy()` instead of
    starting one: it is counted, and the cooldown stays armed, because the running retrain
    trains on the same drifted window a drift retrain would.

    Counters are plain ints for the metrics: `checks`, `fired` (every True), `skipped_busy`,
    `suppressed_cooldown` (would have fired but for the cooldown). `clock` returns an aware
    datetime; `last_fired` seeds the cooldown (e.g. from the registry's last drift retrain).
    """

    def __init__(
        self,
        config: DriftConfig,
        clock: Callable[[], dt.datetime] = _utcnow,
        last_fired: dt.datetime | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._cooldown = dt.timedelta(hours=config.cooldown_hours)
        self.last_fired = last_fired
        self.last_reason: TriggerReason | None = None
        self.streak = 0
        self.checks = 0
        self.fired = 0
        self.skipped_busy = 0
        self.suppressed_cooldown = 0

    def update(self, score: float, concept_drift: bool = False) -> bool:
        """Record one drift check; True when a drift retrain should start now."""
        config = self._config
        self.checks += 1
        self.streak = self.streak + 1 if score > config.threshold else 0  # NaN is not above
        reason: TriggerReason | None = None
        if self.streak >= config.sustain:
            reason = "feature_drift"
        elif concept_drift and config.concept_drift_triggers:
            reason = "concept_drift"
        if reason is None or not config.enabled:
            return False
        now = self._clock()
        if self.last_fired is not None and now - self.last_fired < self._cooldown:
            self.suppressed_cooldown += 1
            return False
        self.last_fired = now
        self.last_reason = reason
        self.fired += 1
        return True

    def note_busy(self) -> None:
        """Count a trigger that was skipped because a retrain was already running."""
        self.skipped_busy += 1

    def reset(self) -> None:
        """Forget the run of high scores (call when a new champion and reference take over:
        scores against the old reference say nothing about the new one)."""
        self.streak = 0

    @property
    def next_allowed(self) -> dt.datetime | None:
        """When the cooldown ends (None when no drift retrain has fired)."""
        return None if self.last_fired is None else self.last_fired + self._cooldown
