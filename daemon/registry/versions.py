"""The model registry: which model versions exist, which one is champion, and since when.

A registry row (`models` table) names a version, when it was trained, its artifact directory
(relative to the store's directory, so a copied or restored state directory uses its own
artifacts; `ModelRecord.path` is that directory resolved), the sha256 that pins the artifact
(see `daemon.registry.artifacts`), its status and a report (JSON): the retrain report plus
`trigger`, `data_window` {`first`, `last`} (the first and last sample day) and `samples`
(counts). Every change of champion, by the gate or by `regimed models promote`, is a row of
`promotions` written in the same transaction as the status change, so `champion_at(when)` can
say which version was serving at any time. The rows as values, and their columns, are in
daemon.registry.records.

The registry lives in the store's SQLite file and uses the store's connection and lock;
`Registry(store)` is cheap, so callers make one where they need it. The registry sends its
alerts through the `alert` callback its caller hands it (`AlertSink`): the webhooks are the
daemon's business (daemon.monitor.alerts), not the registry's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias

from daemon.errors import ArtifactError, ModelNotFoundError, StoreError
from daemon.registry.artifacts import (
    LoadedBundle,
    artifacts_root,
    check_version,
    load_bundle,
    save_bundle,
    store_dir,
    unregistered,
    verify_bundle,
)
from daemon.registry.records import (
    MODEL_STATUSES,
    ModelRecord,
    ModelStatus,
    Promotion,
    RetrainRun,
    aware_text,
    check_text,
    model_record,
    relative_path,
    report_json,
    retrain_run,
)
from daemon.registry.shared import fetch, publish

if TYPE_CHECKING:
    from daemon.store.connected import SqlConnection
    from daemon.store.sqlite import Store

__all__ = ["AlertSink", "ModelRecord", "ModelStatus", "Promotion", "Registry", "RetrainRun"]

logger = logging.getLogger(__name__)


#: Where the registry sends an alert: alert(event, summary, details), `details` JSON values.
#: The commands and the daemon hand it `send_alert` bound to the `[alerts]` section.
AlertSink: TypeAlias = Callable[[str, str, Mapping[str, Any]], object]

#: The alert events the registry sends.
ARTIFACT_REFUSED = "artifact_refused"
ARTIFACT_VERIFICATION_FAILED = "artifact_verification_failed"


class Registry:
    """Register, promote, load and verify model versions of one store.

    `alert` receives an alert whenever an artifact is refused on promotion or loading, or fails
    verification; without it those are only logged and raised.
    `root` is where new bundles are written (default: `models/` beside the store file).
    """

    def __init__(
        self,
        store: Store,
        *,
        alert: AlertSink | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.store = store
        self.alert = alert
        self.root = Path(root) if root is not None else artifacts_root(store.path)
        #: The directory that relative artifact paths in the registry are relative to.
        self.base = store_dir(store.path)

    # -- registering -----------------------------------------------------------------------

    def register(
        self,
        version: str,
        models: Mapping[str, Any],
        *,
        trained_at: dt.datetime,
        trigger: str,
        data_window: tuple[dt.date | str, dt.date | str],
        sample_counts: Mapping[str, Any],
        report: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        status: Literal["candidate", "rejected"] = "candidate",
        promote_reason: str | None = None,
        trusted: Mapping[str, Sequence[str]] | None = None,
        validated: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Write the bundle of a new version and its registry row; promote it if
        `promote_reason` is given (e.g. "gate passed: ..."), in the same transaction.
        `validated`: the members as validated, when `models` are their refit (kept in the
        bundle for the gate's comparisons).

        The bundle is written first (atomically); if the row cannot be written the bundle is
        removed again, so there is never a row without an artifact nor a visible artifact
        without a row. `meta` goes into the bundle's manifest (e.g. feature names, ensemble
        weights); the registry row holds `report` with `trigger`, `data_window` and `samples`.
        """
        check_version(version)
        first, last = (d.isoformat() if isinstance(d, dt.date) else str(d) for d in data_window)
        row_report = {
            **dict(report or {}),
            "trigger": trigger,
            "data_window": {"first": first, "last": last},
            "samples": dict(sample_counts),
        }
        report_json(row_report)
        with self.store.transaction(f"check model {version!r}", write=False) as conn:
            _refuse_known(conn, self.store.path, version)
        saved = save_bundle(self.root, version, models, dict(meta or {}), trusted, validated)
        try:
            return self.add_model(
                version,
                trained_at=trained_at,
                sha256=saved.sha256,
                path=saved.path,
                report=row_report,
                status="champion" if promote_reason is not None else status,
                reason=promote_reason,
            )
        except BaseException:
            shutil.rmtree(saved.path, ignore_errors=True)
            raise

    def add_model(
        self,
        version: str,
        *,
        trained_at: dt.datetime,
        sha256: str,
        path: str | os.PathLike[str],
        report: Mapping[str, Any] | None = None,
        status: ModelStatus = "candidate",
        reason: str | None = None,
    ) -> ModelRecord:
        """Register an artifact that is already on disk; a version can be registered once.
        `path` is recorded relative to the store's directory when it lies inside it (a relative
        `path` is taken as relative to that directory), else absolute.

        With status "champion" the previous champion is retired and a promotion is recorded
        (with `reason`, default "registered as champion").
        """
        check_text("add_model", "version", version)
        if status not in MODEL_STATUSES:
            raise StoreError(f"add_model.status = {status!r}: expected one of {MODEL_STATUSES}")
        row = {
            "version": version,
            "trained_at": aware_text("add_model(trained_at)", trained_at),
            "sha256": sha256,
            "path": relative_path(path, self.base),
            "status": status,
            "report": report_json(report),
        }
        with self.store.transaction(f"add model {version!r}", write=True) as conn:
            _refuse_known(conn, self.store.path, version)
            previous = _champion_version(conn) if status == "champion" else None
            if status == "champion":
                conn.execute("UPDATE models SET status = 'retired' WHERE status = 'champion'")
            conn.execute(
                "INSERT INTO models (version, trained_at, sha256, path, status, report) "
                "VALUES (:version, :trained_at, :sha256, :path, :status, :report)",
                row,
            )
            if status == "champion":
                _record_promotion(conn, version, previous, reason or "registered as champion")
            if self.store.shared:  # every host of a shared store serves it
                publish(conn, version, os.path.join(self.base, row["path"]))
        return model_record(row, self.base)

    def set_status(self, version: str, status: Literal["candidate", "rejected"]) -> ModelRecord:
        """Mark a non-champion version as candidate or rejected (e.g. after the gate)."""
        with self.store.transaction(f"set the status of model {version!r}", write=True) as conn:
            record = _model_row(conn, self.store.path, version, self.base)
            if record.status == "champion":
                raise StoreError(
                    f"{self.store.path}: model version {version!r} is the champion; promote "
                    "another version instead"
                )
            conn.execute("UPDATE models SET status = ? WHERE version = ?", (status, version))
        return dataclasses.replace(record, status=status)

    # -- promoting -------------------------------------------------------------------------

    def promote(
        self,
        version: str,
        *,
        reason: str,
        check_artifact: bool = True,
        now: dt.datetime | None = None,
    ) -> Promotion | None:
        """Make `version` the champion and record why; None if it already is the champion.

        With `check_artifact` the bundle is verified first: a refused one raises ArtifactError
        (and sends an alert) and the champion stays as it was. An unknown version raises
        ModelNotFoundError.
        """
        check_text("promote", "reason", reason)
        record = self.model(version)
        if check_artifact:
            fetch(self.store, record.version, record.path)
            problems = verify_bundle(record.path, record.sha256)
            if problems:
                self._refused(record, "promotion", problems)
        when = aware_text("promote(now)", now or dt.datetime.now(dt.UTC))
        with self.store.transaction(f"promote model {version!r}", write=True) as conn:
            _model_row(conn, self.store.path, version, self.base)
            previous = _champion_version(conn)
            if previous == version:
                return None
            conn.execute("UPDATE models SET status = 'retired' WHERE status = 'champion'")
            conn.execute("UPDATE models SET status = 'champion' WHERE version = ?", (version,))
            promotion_id = _record_promotion(conn, version, previous, reason, when)
        return Promotion(promotion_id, version, dt.datetime.fromisoformat(when), previous, reason)

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        """Every registered model, oldest first."""
        with self.store.transaction("list models", write=False) as conn:
            rows = conn.execute(f"{_SELECT_MODELS} ORDER BY trained_at, version").fetchall()
        return [model_record(_as_dict(r), self.base) for r in rows]

    def model(self, version: str) -> ModelRecord:
        """One registered model; ModelNotFoundError if the version is unknown."""
        with self.store.transaction(f"read model {version!r}", write=False) as conn:
            return _model_row(conn, self.store.path, version, self.base)

    def champion(self) -> ModelRecord | None:
        """The model that scores live data, or None before the first promotion."""
        with self.store.transaction("read the champion", write=False) as conn:
            row = conn.execute(f"{_SELECT_MODELS} WHERE status = 'champion'").fetchone()
        return None if row is None else model_record(_as_dict(row), self.base)

    def promotions(self) -> list[Promotion]:
        """The promotion history, oldest first."""
        with self.store.transaction("read the promotion history", write=False) as conn:
            rows = conn.execute(
                "SELECT id, version, promoted_at, previous_version, reason FROM promotions "
                "ORDER BY id"
            ).fetchall()
        return [
            Promotion(int(i), str(v), dt.datetime.fromisoformat(t), p, str(r))
            for i, v, t, p, r in rows
        ]

    def champion_at(self, when: dt.datetime) -> str | None:
        """The version that was champion at `when` (aware), or None if there was none yet."""
        moment = dt.datetime.fromisoformat(aware_text("champion_at(when)", when))
        current: Promotion | None = None
        for promotion in self.promotions():  # a few rows a year: compare as datetimes
            if promotion.promoted_at <= moment and (
                current is None or promotion.promoted_at >= current.promoted_at
            ):
                current = promotion
        return None if current is None else current.version

    # -- artifacts -------------------------------------------------------------------------

    def load(
        self, version: str | None = None, trusted: Mapping[str, Sequence[str]] | None = None
    ) -> tuple[ModelRecord, LoadedBundle]:
        """The record and the loaded, verified models of `version` (default: the champion);
        `trusted`: the configuration's custom models' trusted types (daemon.registry.loading).

        A refused artifact raises ArtifactError and sends an alert.
        """
        if version is None:
            record = self.champion()
            if record is None:
                raise ModelNotFoundError(f"{self.store.path}: no champion model yet")
        else:
            record = self.model(version)
        try:
            fetch(self.store, record.version, record.path)
            return record, load_bundle(record.path, record.sha256, trusted)
        except ArtifactError as exc:
            self._refused(record, "loading", [str(exc)])

    def verify(self) -> dict[str, list[str]]:
        """The problems of every registered artifact by version (an empty list when sound).

        Any problem is logged and sent as one alert.
        """
        models = self.models()
        for m in models:
            fetch(self.store, m.version, m.path)
        results = {m.version: verify_bundle(m.path, m.sha256) for m in models}
        failed = {version: problems for version, problems in results.items() if problems}
        if failed:
            for version, problems in failed.items():
                logger.error("model %s: artifact fails verification: %s", version, problems)
            self._alert(
                ARTIFACT_VERIFICATION_FAILED,
                f"{len(failed)} of {len(results)} model artifacts fail verification "
                f"({', '.join(failed)})",
                {"store": self.store.path, "problems": failed},
            )
        return results

    def unregistered(self) -> list[Path]:
        """Bundle directories in the artifact folder with no row in this registry (see
        `daemon.registry.artifacts.unregistered`); reported, never removed: they may be another
        store's."""
        return unregistered(self.root, (m.version for m in self.models()))

    def _refused(self, record: ModelRecord, during: str, problems: list[str]) -> NoReturn:
        message = f"model {record.version}: artifact refused ({during}): {'; '.join(problems)}"
        logger.error("%s", message)
        self._alert(
            ARTIFACT_REFUSED,
            f"model {record.version}: artifact refused during {during}",
            {"version": record.version, "path": record.path, "problems": problems},
        )
        raise ArtifactError(message)

    def _alert(self, event: str, summary: str, details: Mapping[str, Any]) -> None:
        if self.alert is not None:
            self.alert(event, summary, details)

    # -- retrain runs ----------------------------------------------------------------------

    def add_retrain_run(
        self,
        *,
        trigger: str,
        started_at: dt.datetime,
        finished_at: dt.datetime,
        promoted: bool,
        reason: str,
        version: str | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> RetrainRun:
        """Record one retrain attempt (successful or not) and return it with its id."""
        check_text("add_retrain_run", "trigger", trigger)
        row = {
            "version": version,
            "trigger": trigger,
            "started_at": aware_text("add_retrain_run(started_at)", started_at),
            "finished_at": aware_text("add_retrain_run(finished_at)", finished_at),
            "promoted": int(bool(promoted)),
            "reason": reason,
            "report": report_json(report),
        }
        with self.store.transaction("record a retrain run", write=True) as conn:
            run_id = conn.execute(
                "INSERT INTO retrain_runs (version, trigger, started_at, finished_at, promoted, "
                "reason, report) VALUES (:version, :trigger, :started_at, :finished_at, "
                ":promoted, :reason, :report) RETURNING id",
                row,
            ).fetchone()[0]
        return retrain_run({"id": run_id, **row})

    def last_retrain_run(self) -> RetrainRun | None:
        """The most recently recorded retrain run, or None."""
        with self.store.transaction("read the last retrain run", write=False) as conn:
            row = conn.execute(
                f"SELECT {', '.join(_RUN_COLUMNS)} FROM retrain_runs "  # noqa: S608 (constants)
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return retrain_run(dict(zip(_RUN_COLUMNS, row, strict=True)))

    def retrain_runs_since(self, moment: dt.datetime) -> list[RetrainRun]:
        """The retrain runs that finished at or after `moment` (aware), oldest first: what a
        daemon of the group reads before it retrains (daemon.training.window)."""
        # The times are ISO 8601 text with an offset; the text comparison only narrows the
        # read (a day of margin covers any offset), the comparison of times decides.
        aware_text("retrain_runs_since(moment)", moment)
        after = (moment - dt.timedelta(days=1)).astimezone(dt.UTC)
        with self.store.transaction("read the recent retrain runs", write=False) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_RUN_COLUMNS)} FROM retrain_runs "  # noqa: S608 (constants)
                "WHERE finished_at >= ? ORDER BY id",
                (after.isoformat(),),
            ).fetchall()
        runs = [retrain_run(dict(zip(_RUN_COLUMNS, row, strict=True))) for row in rows]
        return [run for run in runs if run.finished_at >= moment]


# -- helpers -------------------------------------------------------------------------------

_MODEL_COLUMNS = ("version", "trained_at", "sha256", "path", "status", "report")
_RUN_COLUMNS = (
    "id", "version", "trigger", "started_at", "finished_at", "promoted", "reason", "report",
)  # fmt: skip
_SELECT_MODELS = f"SELECT {', '.join(_MODEL_COLUMNS)} FROM models"  # noqa: S608 (constants)


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_MODEL_COLUMNS, row, strict=True))


def _model_row(conn: SqlConnection, path: str, version: str, base: Path) -> ModelRecord:
    row = conn.execute(f"{_SELECT_MODELS} WHERE version = ?", (version,)).fetchone()
    if row is None:
        raise ModelNotFoundError(
            f"{path}: model version {version!r} is not registered (see `regimed models list`)"
        )
    return model_record(_as_dict(row), base)


def _refuse_known(conn: SqlConnection, path: str, version: str) -> None:
    if conn.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
        raise StoreError(f"{path}: model version {version!r} is already registered")


def _champion_version(conn: SqlConnection) -> str | None:
    row = conn.execute("SELECT version FROM models WHERE status = 'champion'").fetchone()
    return None if row is None else str(row[0])


def _record_promotion(
    conn: SqlConnection,
    version: str,
    previous: str | None,
    reason: str,
    when: str | None = None,
) -> int:
    when = when or dt.datetime.now(dt.UTC).isoformat()
    row = conn.execute(
        "INSERT INTO promotions (version, promoted_at, previous_version, reason) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        (version, when, previous, reason),
    ).fetchone()
    return int(row[0])
