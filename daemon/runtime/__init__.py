"""The process: the service, its retrains (parent and child process) and scheduler, status and
sd_notify.

The public names are its modules, imported where they are needed: importing the package loads
none of them, so a process that needs one small module does not load the libraries of the others.
"""

from __future__ import annotations

__all__ = [
    "retrain_child",
    "retrain_runner",
    "retrains",
    "scheduler",
    "sdnotify",
    "service",
    "status",
]
