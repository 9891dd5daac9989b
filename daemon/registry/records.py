"""The registry's rows as values: a registered model (`ModelRecord`), a retrain attempt
(`RetrainRun`) and a change of champion (`Promotion`), and the conversions between them and the
SQLite columns of daemon.registry.versions (times as ISO 8601 text, reports as JSON, artifact
paths relative to the store's directory)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.errors import StoreError

__all__ = [
    "MODEL_STATUSES",
    "ModelRecord",
    "ModelStatus",
    "Promotion",
    "RetrainRun",
    "aware_text",
    "check_text",
    "model_record",
    "relative_path",
    "report_json",
    "retrain_run",
    "retrain_run_row",
]

ModelStatus = Literal["candidate", "champion", "retired", "rejected"]
MODEL_STATUSES: tuple[ModelStatus, ...] = ("candidate", "champion", "retired", "rejected")


@dataclass(frozen=True)
class ModelRecord:
    """A registered model artifact."""

    version: str
    trained_at: dt.datetime
    sha256: str
    path: str
    status: ModelStatus
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def trigger(self) -> str | None:
        """What started the retrain that made it (schedule, drift, manual, ...)."""
        value = self.report.get("trigger")
        return value if isinstance(value, str) else None

    @property
    def balanced_accuracy(self) -> float | None:
        """Overall validation balanced accuracy from the report, if it has one."""
        return _number(self.report, "validation", "overall", "balanced_accuracy")

    @property
    def accuracy(self) -> float | None:
        """Overall validation accuracy from the report, if it has one."""
        return _number(self.report, "validation", "overall", "accuracy")


@dataclass(frozen=True)
class RetrainRun:
    """One retrain attempt, promoted or not."""

    id: int
    version: str | None
    trigger: str
    started_at: dt.datetime
    finished_at: dt.datetime
    promoted: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Promotion:
    """One change of champion: `version` replaced `previous_version` at `promoted_at`."""

    id: int
    version: str
    promoted_at: dt.datetime
    previous_version: str | None
    reason: str


# -- rows and columns ----------------------------------------------------------------------


def check_text(owner: str, name: str, value: object) -> None:
    """`StoreError` naming `owner.name` unless `value` is a non-empty printable string."""
    if not isinstance(value, str) or not value or not value.isprintable():
        raise StoreError(f"{owner}.{name} = {value!r}: expected a non-empty printable string")


def aware_text(name: str, value: dt.datetime) -> str:
    """An aware datetime as the ISO 8601 text of a column; `StoreError` naming `name` else."""
    if not isinstance(value, dt.datetime) or value.utcoffset() is None:
        raise StoreError(f"{name} = {value!r}: expected a time zone-aware datetime")
    return value.isoformat()


def report_json(report: Mapping[str, Any] | None) -> str:
    """A report as the JSON text of a column (`{}` for None); `StoreError` if it is not JSON."""
    try:
        return json.dumps(dict(report or {}))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"report: not JSON-serialisable: {exc}") from None


def _loads(text: str | None) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {"value": value}


def _number(doc: Mapping[str, Any], *keys: str) -> float | None:
    value: Any = doc
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def relative_path(path: str | os.PathLike[str], base: Path) -> str:
    """An artifact path in the registry's form: relative to `base` (the store's directory)
    when it lies inside it, else absolute. A relative `path` is already relative to `base`."""
    if not os.path.isabs(path):
        return os.path.normpath(path)
    try:
        return Path(os.path.normpath(path)).relative_to(base).as_posix()
    except ValueError:
        return os.path.normpath(path)


def model_record(row: Mapping[str, Any], base: Path) -> ModelRecord:
    """A record from a registry row; a relative artifact path is resolved against `base`."""
    return ModelRecord(
        version=str(row["version"]),
        trained_at=dt.datetime.fromisoformat(row["trained_at"]),
        sha256=str(row["sha256"]),
        path=os.path.normpath(os.path.join(base, row["path"])),
        status=row["status"],
        report=_loads(row["report"]),
    )


def retrain_run(row: Mapping[str, Any]) -> RetrainRun:
    """A retrain run from a `retrain_runs` row."""
    return RetrainRun(
        id=int(row["id"]),
        version=row["version"],
        trigger=str(row["trigger"]),
        started_at=dt.datetime.fromisoformat(row["started_at"]),
        finished_at=dt.datetime.fromisoformat(row["finished_at"]),
        promoted=bool(row["promoted"]),
        reason=str(row["reason"]),
        report=_loads(row["report"]),
    )


def retrain_run_row(run: RetrainRun) -> dict[str, Any]:
    """`run` as a `retrain_runs` row of JSON values: what `retrain_run` reads back."""
    return {
        "id": run.id,
        "version": run.version,
        "trigger": run.trigger,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "promoted": int(run.promoted),
        "reason": run.reason,
        "report": report_json(run.report),
    }
