"""The `regimed` command: one module per command group, and the demo."""

from __future__ import annotations

from daemon.cli.main import main

__all__ = ["main"]
