"""Bars -> regime, features and delayed labels: pure computation, no I/O; this package hands on
the public names."""

from __future__ import annotations

from daemon.pipeline.engine import BANK_MIN_SYMBOLS, Output, Pipeline, history_rows
from daemon.pipeline.offline import label_csv
from daemon.pipeline.regime import RegimeLabel, RegimeLabeler, label_history, proxy_vix

__all__ = [
    "BANK_MIN_SYMBOLS",
    "Output",
    "Pipeline",
    "RegimeLabel",
    "RegimeLabeler",
    "history_rows",
    "label_csv",
    "label_history",
    "proxy_vix",
]
