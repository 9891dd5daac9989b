"""The process: the service, the per-poll ingest step, its retrains (parent and child process)
and scheduler, status and sd_notify. Its public names are its modules, imported by
`daemon.cli` one command at a time."""

from __future__ import annotations

__all__ = [
    "ingest",
    "retrain_child",
    "retrain_runner",
    "retrains",
    "scheduler",
    "sdnotify",
    "service",
    "status",
]
