"""Configuration of the retrain process the daemon starts (`daemon.runtime.retrain_runner`).

The `[retrain]` section of `Config`, kept in its own module so the runner can be built and
tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config.settings import bounded


@dataclass(frozen=True)
class RetrainProcessConfig:
    """How long the daemon lets a retrain process run, and how long it waits for it to stop.

    `stop_grace_seconds`: after SIGTERM, how long the process may take to clean up (release
    the lock, remove its temporary artifact directory) before it is killed; the daemon must
    exit within 30 s of its own SIGTERM, so at most 25. `timeout_seconds`: a run still going
    after this long is stopped and counted as failed (0: no limit); it keeps a hung fit from
    blocking every later retrain.
    """

    stop_grace_seconds: float = bounded(10.0, gt=0, le=25)
    timeout_seconds: float = bounded(7200.0, ge=0)
