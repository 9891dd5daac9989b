"""The capped doubling pause every retry uses."""

from __future__ import annotations

from daemon.domain import Backoff


def test_the_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset():
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.attempts == 8
    backoff.reset()
    assert backoff.next() == 1
