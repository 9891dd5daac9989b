"""Walk-forward evaluation of regime-aware training (`regimed evaluate`, docs/evaluation.md)."""

from __future__ import annotations

from daemon.evaluation.data import load_csvs, load_default
from daemon.evaluation.results import EvaluationDocument, Timeline
from daemon.evaluation.run import Evaluation, evaluate

__all__ = ["Evaluation", "EvaluationDocument", "Timeline", "evaluate", "load_csvs", "load_default"]
