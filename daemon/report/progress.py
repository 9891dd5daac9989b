"""Progress of a long step, for a person at a terminal and for a log alike.

On a terminal the state is one line redrawn in place (with a bar when the share done is known).
Anywhere else (journald, a file, a pipe) it is a plain line at most every `every_s` seconds, so a
log gets no carriage returns and no log line is glued to a half-drawn bar. `regimed replay`,
`retrain`, `evaluate` and `demo` all report through this one class.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

#: Width of the bar on a terminal, in characters.
BAR_WIDTH = 30


class Progress:
    """Reports a step's state to `stream` (default stderr); see the module docstring.

    `tty` overrides the stream's own answer to `isatty()`; `clock` is injectable for tests.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every_s: float = 5.0,
        redraw_s: float = 0.5,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if tty is None else tty
        self.interval = redraw_s if self.terminal else every_s
        self.clock = clock
        self.started = clock()
        # A plain line waits a whole interval: a short step shows only its closing line.
        self._shown = -float("inf") if self.terminal else self.started
        self._drawn = False

    def elapsed(self) -> float:
        """Seconds since this progress began."""
        return self.clock() - self.started

    def due(self) -> bool:
        """Whether `update` would show something now (to skip building its text)."""
        return self.clock() - self._shown >= self.interval

    def update(self, text: str, fraction: float | None = None) -> None:
        """The current state, shown if the last one is old enough (see the class)."""
        now = self.clock()
        if now - self._shown < self.interval:
            return
        self._shown = now
        if not self.terminal:
            share = "" if fraction is None else f" ({100 * min(max(fraction, 0.0), 1.0):.0f}%)"
            self._write(f"  {text}{share}\n")
            return
        bar = ""
        if fraction is not None:
            filled = int(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
        self._write(f"\r\x1b[K{bar}{text}")
        self._drawn = True

    def line(self, text: str) -> None:
        """A line that stays (a finished part or step); on a terminal it replaces the bar."""
        self.clear()
        self._write(f"{text}\n")

    def clear(self) -> None:
        """Remove the bar from a terminal (nothing to do elsewhere)."""
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def remaining(elapsed: float, done: float, total: float) -> float | None:
    """Seconds left at the pace so far: `done` of `total` units of work took `elapsed`
    seconds. None before any unit is done (no pace to go by).

    >>> remaining(60.0, 2, 8)
    180.0
    >>> remaining(5.0, 0, 8) is None
    True
    """
    if done <= 0:
        return None
    return max(0.0, elapsed / done * (total - done))


def duration(seconds: float) -> str:
    """A span for people: seconds under a minute, minutes and seconds under an hour, then
    hours and minutes.

    >>> duration(42.4), duration(200), duration(3900)
    ('42 s', '3 min 20 s', '1 h 05 min')
    """
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
