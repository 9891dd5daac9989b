"""Concept drift: River's ADWIN over the 0/1 errors of matured predictions (`ErrorStream`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from river.drift import ADWIN

__all__ = ["ErrorStream"]


class ErrorStream:
    """Concept drift: River's ADWIN over the 0/1 errors of matured predictions.

    ADWIN finds a change of the error rate in either direction; only a rise is a reason to
    retrain, so each detection is classed by whether the error rate of the window ADWIN keeps
    is above its value just before. `take_alarm()` reports a rise once.
    """

    def __init__(self, delta: float = 0.002) -> None:
        self._adwin = ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self.seen = 0
        self.detections = 0
        self.rises = 0
        self._alarm = False

    def update(self, errors: Iterable[bool | int]) -> int:
        """Feed errors (1/True: the prediction was wrong), oldest first; returns how many rises
        of the error rate ADWIN detected among them."""
        rises = 0
        for error in errors:
            before = self._adwin.estimation
            self._adwin.update(1.0 if error else 0.0)  # type: ignore[no-untyped-call]
            self.seen += 1
            if self._adwin.drift_detected:
                self.detections += 1
                if self._adwin.estimation > before:
                    rises += 1
        self.rises += rises
        self._alarm = self._alarm or rises > 0
        return rises

    @property
    def error_rate(self) -> float:
        """The error rate over ADWIN's window (the recent stretch with no detected change);
        NaN before the first error arrives."""
        return float(self._adwin.estimation) if self._adwin.width else math.nan

    def take_alarm(self) -> bool:
        """True once after the error rate rose (since the previous call), then False."""
        alarm, self._alarm = self._alarm, False
        return alarm
