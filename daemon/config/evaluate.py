"""Configuration of `regimed evaluate`: the walk-forward evaluation of regime-aware training.

Kept apart from `daemon.config` (which imports it into `Config`) so each module stays small.
The defaults fit the evaluation of the bundled history in a few minutes on two cores
(docs/evaluation.md): two fast base models instead of the eight, quarterly folds from 2003.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Literal

from daemon.config.settings import bounded, show
from daemon.config.training import MODEL_NAMES
from daemon.errors import ConfigError

EvaluateStep = Literal["quarter", "month", "year"]
STEPS: tuple[EvaluateStep, ...] = ("quarter", "month", "year")

#: Months between two folds' cutoffs, by `evaluate.step`.
STEP_MONTHS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class EvaluateConfig:
    """How `regimed evaluate` cuts the history into folds, what it fits and how it scores.

    `start` is the first cutoff (the first test day); every `step` a new fold retrains on all
    bars whose labels are known before its cutoff. `models` are the base models of the soft
    vote (the production default is all eight; the evaluation defaults to two fast ones).
    `control_folds` limits the shuffled-label control to the last N folds (0: every fold).
    """

    start: dt.date = dataclasses.field(default=dt.date(2003, 1, 1))
    step: EvaluateStep = "quarter"
    models: tuple[str, ...] = ("lightgbm", "logistic_regression")
    bootstrap_samples: int = bounded(1000, ge=0)
    block_days: int = bounded(10, ge=1)
    control_folds: int = bounded(0, ge=0)
    #: Threads per model fit; "auto": every core this process may use.
    n_jobs: int | Literal["auto"] = bounded("auto", ge=1, le=256)
    seed: int = bounded(42, ge=0)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("evaluate.models = []: expected at least one model")
        for i, name in enumerate(self.models):
            if name not in MODEL_NAMES:
                raise ConfigError(
                    f"evaluate.models[{i}] = {show(name)}: expected one of {', '.join(MODEL_NAMES)}"
                )
            if name in self.models[:i]:
                raise ConfigError(f"evaluate.models[{i}] = {show(name)}: listed twice")
