"""`Backoff`: capped exponential backoff, the pause before the next attempt of something that
failed (a broker that does not answer, a dead-letter topic that refuses, a champion artifact
that is refused)."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Capped exponential backoff: `initial_s`, doubled at every `next()`, at most `cap_s`;
    `reset()` after a success."""

    def __init__(self, initial_s: float = 1.0, cap_s: float = 30.0) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.attempts = 0

    def next(self) -> float:
        """The pause before the next attempt (counts this one)."""
        delay = min(self.cap_s, self.initial_s * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
