"""One retrain: split, sampling, archive, models, ensemble, scoring, gate and the lock.

Its public names are its modules. The package imports none of them, so the daemon can use
`lock` and `threads` without loading scikit-learn (only the retrain process fits models).
"""

from __future__ import annotations

__all__ = [
    "archive", "custom", "drift_reference", "ensemble", "fitting", "gate", "lock", "models",
    "report", "sampling", "scoring", "split", "threads", "trainer", "window",
]  # fmt: skip
