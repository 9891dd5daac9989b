"""Where a retrain fitted its models: the report's `cluster` section.

Written only when `training.dask_scheduler` names a cluster: the scheduler, its workers and
threads when the fits started, each model fit (stage "fit" or "refit") with how it was spread
(`how`: "task", the whole fit on one worker; "partitions", XGBoost or LightGBM on the rows
partitioned across `workers`; "trees", a forest's trees built on `workers`), the worker that ran
a task and its seconds there, and, when the scheduler could not be reached and
`training.dask_fallback_local` let the retrain fit on this machine, why (`fallback`). No heavy
import here: the report imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from daemon.training.report_sections import as_int, as_number, as_text

__all__ = ["HOWS", "Placement", "TaskFit"]

#: How a model was fitted on the cluster: whole as one task on a worker, on the rows
#: partitioned across the workers (XGBoost, LightGBM), by batches of trees (the forests).
HOWS = ("task", "partitions", "trees")


@dataclass(frozen=True)
class TaskFit:
    """One model fitted on the cluster: the stage, the model, the address of the worker that
    fitted it whole (None: spread over `workers`, or not fitted), the seconds the fit took, how
    it was spread (HOWS) and every worker that took part."""

    stage: str
    model: str
    worker: str | None
    seconds: float | None
    how: str = "task"
    workers: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TaskFit:
        workers = doc.get("workers")
        worker = as_text(doc.get("worker"))
        return cls(
            as_text(doc.get("stage")) or "",
            as_text(doc.get("model")) or "",
            worker,
            as_number(doc.get("seconds")),
            as_text(doc.get("how")) or "task",
            tuple(str(w) for w in workers)
            if isinstance(workers, list)
            else ((worker,) if worker else ()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "how": self.how,
            "worker": self.worker,
            "workers": list(self.workers),
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Placement:
    """The cluster a retrain fitted on (`workers` and `threads` as the fits started) and each
    fit there; `fallback` says why it fitted on this machine instead (None: it did not)."""

    scheduler: str
    workers: int = 0
    threads: int = 0
    fits: tuple[TaskFit, ...] = ()
    fallback: str | None = None

    def with_fits(self, fits: tuple[TaskFit, ...]) -> Placement:
        """This placement with `fits` added after the ones it has."""
        return replace(self, fits=self.fits + fits)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Placement:
        fits = doc.get("fits")
        return cls(
            as_text(doc.get("scheduler")) or "",
            as_int(doc.get("workers")) or 0,
            as_int(doc.get("threads")) or 0,
            tuple(TaskFit.from_json(f) for f in fits if isinstance(f, Mapping))
            if isinstance(fits, list)
            else (),
            as_text(doc.get("fallback")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "workers": self.workers,
            "threads": self.threads,
            "fits": [f.to_json() for f in self.fits],
            "fallback": self.fallback,
        }
