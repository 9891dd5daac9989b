"""Rejected records in the log: at INFO with their reason, and never a flood.

A producer sending garbage can reject thousands of records a second; the metric
`regimed_events_rejected_total{reason}` counts every one, while the log shows the first few of
each minute in full (where, reason, detail) and then one line saying how many more there were.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from daemon.errors import EventRejected

logger = logging.getLogger("consumers.rejected")

#: Lines in full per window, and the window's length in seconds.
LINES_PER_WINDOW = 10
WINDOW_S = 60.0


class RejectionLog:
    """Logs rejected records, at most `lines` in full per `window_s` seconds; the ones left out
    are counted by reason and summed up in one line when the next window opens."""

    def __init__(
        self,
        lines: int = LINES_PER_WINDOW,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = lines
        self.window_s = window_s
        self.clock = clock
        self._opened = -float("inf")
        self._shown = 0
        self._left_out: Counter[str] = Counter()

    def log(self, record: Any, rejected: EventRejected) -> None:
        """Note one rejected record (`record` has topic, partition and offset)."""
        now = self.clock()
        if now - self._opened >= self.window_s:
            self._summarise()
            self._opened, self._shown = now, 0
        if self._shown >= self.lines:
            self._left_out[rejected.reason] += 1
            return
        self._shown += 1
        logger.info(
            "rejected %s[%s]@%s: %s", record.topic, record.partition, record.offset, rejected
        )

    def _summarise(self) -> None:
        if not self._left_out:
            return
        by_reason = ", ".join(f"{reason} {n:,}" for reason, n in self._left_out.most_common())
        logger.info(
            "rejected %s more records within %.0f s of the lines above (%s); "
            "regimed_events_rejected_total counts every one",
            f"{sum(self._left_out.values()):,}",
            self.window_s,
            by_reason,
        )
        self._left_out.clear()
