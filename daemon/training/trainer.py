"""One retrain: samples from SQLite -> split -> balanced, weighted fits of the base models ->
a validated soft vote -> per-regime validation -> gate against the champion -> the promoted
members refit on every labelled row (daemon.training.refit) -> artifact and registry row.
`retrain` is what `regimed retrain`, the weekly schedule and drift triggers call.

The report it returns (a `RetrainReport`, daemon/training/report.py) is what
`regimed retrain --json` prints as JSON: the keys scripts rely on
(docs/training.md, "The report as JSON") and more: `gate` (which rule decided, the bootstrap
interval of candidate - champion), `split`,
`ensemble` (vote weights), `windows` (the days and rows each stage saw, the refit's fit
seconds), `champion` (its scores on the same validation sets), `importances`,
`confusion` and `fit_seconds` per model for `regimed report`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.domain import REGIMES
from daemon.errors import RegimedError, RetrainAlreadyRun, RetrainFailed, StoreError
from daemon.pipeline.features.defs import FEATURE_NAMES, FEATURE_VERSION
from daemon.registry.artifacts import artifacts_root, sweep_temporary
from daemon.registry.ensemble import Ensemble
from daemon.registry.records import retrain_run_row
from daemon.registry.versions import AlertSink, Registry
from daemon.store.sqlite import Store
from daemon.store.targets import retrain_target
from daemon.training.custom import check_custom_models
from daemon.training.drift_reference import build_reference
from daemon.training.ensemble import inner_holdout, voted
from daemon.training.lock import store_retrain_lock
from daemon.training.memory import peak_rss_bytes
from daemon.training.refit import Sampled, refit_members, refit_rows, sampled, window
from daemon.training.report import (
    Artifact,
    DataWindow,
    EnsembleVote,
    Figure,
    Gate,
    RetrainReport,
    ScoreTable,
    Split,
    TrainingMix,
    Windows,
)
from daemon.training.rivals import champion_calls, last_candidate_calls
from daemon.training.sampling import weight_report
from daemon.training.validation import diagnose, validate
from daemon.training.window import RetrainWindow, ran_by, slim_run

if TYPE_CHECKING:
    from daemon.training.cluster import Cluster
    from daemon.training.gate import GateDecision, Predictor
    from daemon.training.scoring import Scores

logger = logging.getLogger(__name__)

#: The run's outcome for gate rules that are neither a promotion nor a rejection.
_OUTCOMES: dict[str, str] = {"unchanged": "unchanged"}

#: progress(event, details): "model_started" / "model_finished" per base model, "stage" for
#: the other steps. The CLI draws a progress bar from it on a terminal.
Progress = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class _Data:
    meta: pd.DataFrame
    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    days: npt.NDArray[np.datetime64]
    regimes: npt.NDArray[np.str_]


def new_version(now: dt.datetime, taken: set[str]) -> str:
    """A sortable version name from the UTC time: 20261126T210000Z (-2, -3... if taken)."""
    base = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    version, n = base, 1
    while version in taken:
        n += 1
        version = f"{base}-{n}"
    return version


def retrain(
    config: Config,
    *,
    trigger: str = "manual",
    progress: Progress | None = None,
    now: Callable[[], dt.datetime] | None = None,
    alert: AlertSink | None = None,
    window: RetrainWindow | None = None,
) -> RetrainReport:
    """Train a candidate under the store's retrain lock, gate it, register it; the report.

    `alert` receives the registry's alerts (a refused champion artifact); the commands and the
    retrain process hand it `send_alert` bound to the `[alerts]` section. `window`: what a
    retrain of the daemon serves (daemon.training.window), looked up under the lock.

    Raises RetrainBusy when another retrain runs, RetrainAlreadyRun when a run of any daemon
    served `window` already (nothing is trained), RetrainFailed (after recording the failed
    run, its report as JSON) when no candidate could be made.
    """
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    check_custom_models(config)  # a custom model that cannot work is refused before any fit
    with (
        store_retrain_lock(config.store, config.training.lock_timeout_seconds),
        Store.open(config.store) as store,
    ):
        if window is not None:
            served = window.served_by(Registry(store).retrain_runs_since(window.since))
            if served is not None:
                raise RetrainAlreadyRun(window.done_by(served), retrain_run_row(slim_run(served)))
        retrain_target(store, config.label)  # live samples of another target: relabelled
        for stale in sweep_temporary(artifacts_root(config.store.path)):
            logger.warning("removed %s, left by a retrain that was killed while saving", stale)
        for stray in Registry(store).unregistered():
            logger.warning(
                "%s has no registry row in this store (a retrain killed before registering "
                "it, or another store's bundle); `regimed models verify` lists it",
                stray,
            )
        return _Retrain(config, store, trigger, progress or _quiet, clock, alert).run()


def _quiet(event: str, details: Mapping[str, Any]) -> None:
    logger.debug("retrain %s %s", event, dict(details))


class _Retrain:
    def __init__(
        self,
        config: Config,
        store: Store,
        trigger: str,
        progress: Progress,
        clock: Callable[[], dt.datetime],
        alert: AlertSink | None = None,
    ) -> None:
        self.config = config
        self.alert = alert
        self.store = store
        self.trigger = trigger
        self.progress = progress
        self.clock = clock
        self.started_at = clock()
        self.t0 = time.perf_counter()
        self.champion_error: str | None = None
        self.cluster: Cluster | None = None
        #: the report so far: a failed run reports the steps it finished
        self.report = RetrainReport(trigger=trigger, ran_by=ran_by(config), target=config.label.key)

    def run(self) -> RetrainReport:
        try:
            with self._on_cluster():
                return self._run()
        except RegimedError as exc:
            if isinstance(exc, RetrainFailed):
                raise
            reason = f"retrain failed: {exc}"
            report = self._add(
                promoted=False,
                reason=reason,
                outcome="failed",
                **self._spent(),
            ).to_json()
            try:
                Registry(self.store).add_retrain_run(
                    trigger=self.trigger,
                    started_at=self.started_at,
                    finished_at=self.clock(),
                    promoted=False,
                    reason=reason,
                    version=None,
                    report=report,
                )
            except StoreError as record_exc:  # e.g. the same full disk: keep the first cause
                logger.warning("the failed retrain could not be recorded: %s", record_exc)
            raise RetrainFailed(reason, report) from exc

    @contextmanager
    def _on_cluster(self) -> Iterator[None]:
        """`self.cluster`: the Dask cluster of `training.dask_scheduler` while the run lasts
        (daemon.training.cluster), None when the models fit on this machine."""
        if not self.config.training.dask_scheduler:
            yield
            return
        from daemon.training.cluster import open_cluster

        with open_cluster(self.config) as cluster:
            self.cluster = cluster
            try:
                yield
            finally:
                self.cluster = None

    def _placed(self) -> None:
        """The report's `cluster` section as it is now."""
        if self.cluster is not None:
            self._add(cluster=self.cluster.placement)

    def _spent(self) -> dict[str, Any]:
        """The report's time and peak memory of the run so far."""
        return {
            "duration_seconds": round(time.perf_counter() - self.t0, 3),
            "peak_rss_bytes": peak_rss_bytes(),
        }

    def _add(self, **sections: Any) -> RetrainReport:
        """The report with `sections` filled in (kept, for a failure in a later step)."""
        self.report = replace(self.report, **sections)
        return self.report

    # -- the steps --------------------------------------------------------------------------

    def _run(self) -> RetrainReport:
        from daemon.training.fitting import fit_all
        from daemon.training.scoring import confusion, importances
        from daemon.training.split import split_samples

        cfg = self.config
        self._stage("load")
        data = self._load()
        self._stage("split")
        split = split_samples(data.meta, cfg.training, cfg.label, cfg.archive.events)
        train = np.asarray(split.train)
        val = np.asarray(split.validation)
        fit_rows, hold_rows = inner_holdout(
            data.days,
            train,
            self.config.label.horizon_bars,
            self.config.training.ensemble_holdout_fraction,
        )
        self._add(
            split=Split(
                cutoff=_day(split.cutoff),
                train_end=_day(split.train_end),
                train_rows=len(train),
                fit_rows=len(fit_rows),
                ensemble_holdout_rows=len(hold_rows),
                validation_rows=len(val),
                purged_rows=int(split.purged),
                held_out_events=tuple(split.held_out_events),
            ),
            data_window=DataWindow(
                first=_day(data.days[train].min()) if len(train) else None,
                last=_day(data.days[val].max()) if len(val) else None,
            ),
            samples={
                "live": int((data.meta["source"] == "live").sum()),
                "archive": int((data.meta["source"] == "archive").sum()),
            },
        )

        windows = Windows(
            fit=window(data.days, fit_rows),
            vote=window(data.days, hold_rows),
            validation=window(data.days, val),
            refit_note="not refit: the gate has not decided yet",
        )
        self._add(windows=windows)

        self._stage("sample")
        fit = sampled(cfg, data.regimes, fit_rows)
        mix = fit.mix
        assert mix is not None  # balanced
        shares = weight_report(mix.counts_after, cfg.weights.regime.as_dict())
        self._add(
            training=TrainingMix(
                regime_counts_before=_ordered(mix.counts_before),
                regime_counts_after=_ordered(mix.counts_after),
                weight_share={r: round(v, 6) for r, v in _ordered(shares.weight_share).items()},
                effective_size_ratio=round(shares.effective_size_ratio, 6),
                absent_regimes=tuple(mix.absent),
            )
        )

        self._stage("fit")
        models, fit_seconds, failed = fit_all(
            self.config,
            data.X[fit.rows],
            data.y[fit.rows],
            fit.weights,
            self.progress,
            cluster=self.cluster,
        )
        self._placed()
        self._add(failed_models=failed)
        self._stage("validate")
        ensemble, holdout_scores = voted(models, data.X[hold_rows], data.y[hold_rows])
        self._add(
            ensemble=EnsembleVote(
                dict(ensemble.vote.weights), ensemble.vote.threshold, holdout_scores
            )
        )
        validation, preds, candidate, references = validate(
            self.config, ensemble, data.X, data.y, data.regimes, train, val, fit_seconds
        )
        self._add(
            validation=validation,
            importances=importances(models),
            confusion={name: confusion(data.y[val], p) for name, p in preds.items()},
        )
        self._add(
            diagnostics=diagnose(
                self.config, self.store, data.y, data.days, data.regimes, val, candidate
            )
        )

        self._stage("gate")
        decision, champion_scores, skill = self._gate(data, val, candidate, references)
        evidence = decision.evidence
        self._add(
            champion=None if champion_scores is None else ScoreTable.of(champion_scores),
            champion_error=self.champion_error or None,
            gate=Gate(
                cfg.gate.metric,
                decision.rule,
                decision.interval or None,
                evidence.edge,
                dict(evidence.regimes),
            ),
            skill=skill,
            promoted=bool(decision.promoted),
            reason=decision.reason,
            outcome=_OUTCOMES.get(decision.rule, "promoted" if decision.promoted else "rejected"),
        )
        if decision.rule == "unchanged":
            self._add(windows=replace(windows, refit_note="not refit: unchanged, no version added"))
            return self._record_unchanged()
        served, refit_train = self._refit(ensemble, data, windows, bool(decision.promoted))

        self._stage("save")
        version = new_version(self.started_at, {m.version for m in Registry(self.store).models()})
        self._add(
            version=version,
            feature_version=FEATURE_VERSION,
            **self._spent(),
        )
        reference = self._drift_reference(data, train if refit_train is None else refit_train)
        report = self._save(version, served, ensemble, self.report, reference)
        self._stage("done")
        return report

    def _refit(
        self, ensemble: Ensemble, data: _Data, windows: Windows, promoted: bool
    ) -> tuple[Ensemble, npt.NDArray[np.int64] | None]:
        """The ensemble to serve and the rows it saw (None: the validated members serve, as
        they were fitted): a promoted candidate's members refit on every labelled row
        (daemon.training.refit) when `training.refit` is on."""
        if not promoted or not self.config.training.refit:
            note = "not refit: " + (
                "the candidate was not promoted" if not promoted else "training.refit is off"
            )
            self._add(windows=replace(windows, refit_note=note))
            return ensemble, None
        self._stage("refit")
        rows = refit_rows(data.meta)
        fit: Sampled = sampled(self.config, data.regimes, rows)
        done = refit_members(
            self.config, ensemble, data.X, data.y, fit, self.progress, self.cluster
        )
        self._placed()
        seen = window(data.days, rows)
        if done.ensemble is None:
            note = f"not refit: {done.error}; the validated members serve"
            self._add(windows=replace(windows, refit_fit_seconds=done.fit_seconds, refit_note=note))
            return ensemble, None
        self._add(
            windows=replace(
                windows, refit=seen, refit_fit_seconds=done.fit_seconds, refit_note=None
            )
        )
        return done.ensemble, rows

    def _stage(self, name: str) -> None:
        self.progress("stage", {"stage": name, "elapsed": time.perf_counter() - self.t0})

    def _load(self) -> _Data:
        meta, X = self.store.read_samples(
            source=None,
            labelled=True,
            feature_version=FEATURE_VERSION,
            target=self.config.label.key,  # samples of another target never join the fit
        )
        meta = meta.reset_index(drop=True)
        return _Data(
            meta=meta,
            X=X,
            y=meta["label"].to_numpy(dtype=np.int8),
            days=meta["ts"].to_numpy(dtype="datetime64[D]"),
            regimes=meta["regime"].to_numpy().astype(str),
        )

    def _gate(
        self,
        data: _Data,
        val: npt.NDArray[np.int64],
        candidate: Predictor,
        references: Mapping[str, Predictor],
    ) -> tuple[GateDecision, Scores | None, dict[str, dict[str, Figure]]]:
        """The gate's decision, the champion's scores on the same validation rows and the
        overall figures with intervals of candidate, champion and references."""
        from daemon.training.gate import decide, gather
        from daemon.training.scoring import score

        cfg = self.config
        min_n = cfg.training.min_score_samples
        regimes = data.regimes[val]
        y = data.y[val]
        champion, self.champion_error = champion_calls(
            self.config, self.store, data.X[val], self.alert
        )
        previous = (
            None
            if champion is not None
            else last_candidate_calls(self.config, self.store, data.X[val])
        )
        evidence, figures = gather(
            y,
            data.days[val],
            regimes,
            candidate,
            champion,
            references,
            cfg.gate,
            min_n=min_n,
            seed=cfg.training.seed,
            previous=previous,
            target=cfg.label.key,
        )
        scores = None if champion is None else score(y, champion.pred, regimes, min_n)
        return decide(evidence, cfg.gate), scores, figures

    def _record_unchanged(self) -> RetrainReport:
        """A candidate that predicts as the champion does: the run is recorded (and
        reported), no version, artifact or registry row of a model is added."""
        self._stage("done")
        report = self._add(
            feature_version=FEATURE_VERSION,
            **self._spent(),
        )
        Registry(self.store).add_retrain_run(
            trigger=self.trigger,
            started_at=self.started_at,
            finished_at=self.clock(),
            promoted=False,
            reason=report.reason or "",
            version=None,
            report=report.to_json(),
        )
        logger.info("retrain (%s): %s", self.trigger, report.reason)
        return report

    def _drift_reference(self, data: _Data, train: npt.NDArray[np.int64]) -> dict[str, Any]:
        """The training rows' feature distributions per regime, stored with the model, which
        the daemon's drift monitor compares live rows with (daemon/monitor/drift/)."""
        drift = self.config.drift
        reference = build_reference(
            data.X[train],
            data.regimes[train],
            FEATURE_NAMES,
            bins=drift.bins,
            min_rows=drift.min_reference_rows,
        )
        return reference.as_dict()

    def _save(
        self,
        version: str,
        ensemble: Ensemble,
        validated: Ensemble,
        typed: RetrainReport,
        reference: Mapping[str, Any],
    ) -> RetrainReport:
        """Artifact, registry row (promoted in the same transaction) and the run record; the
        report with its artifact. `ensemble` serves; `validated`, when it is another (the
        refit's members), is kept in the bundle for the gate's later comparisons."""
        report = typed.to_json()
        registry = Registry(self.store, alert=self.alert)
        meta = {
            "version": version,
            "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "vote": ensemble.vote.as_dict(),
            "trained_at": self.started_at.isoformat(),
            "drift_reference": reference,
        }
        window = report["data_window"]
        promoted = bool(report["promoted"])
        record = registry.register(
            version,
            ensemble.models,
            trained_at=self.started_at,
            trigger=self.trigger,
            data_window=(window["first"], window["last"]),
            sample_counts=report["samples"],
            report=report,
            meta=meta,
            status="candidate" if promoted else "rejected",
            promote_reason=f"gate passed: {report['reason']}" if promoted else None,
            trusted=self.config.models.trusted_types(),
            validated=None if validated is ensemble else validated.models,
        )
        saved = self._add(
            artifact=Artifact(
                path=str(record.path),
                sha256=record.sha256,
                root=str(artifacts_root(self.config.store.path)),
            )
        )
        registry.add_retrain_run(
            trigger=self.trigger,
            started_at=self.started_at,
            finished_at=self.clock(),
            promoted=promoted,
            reason=report["reason"],
            version=version,
            report=saved.to_json(),
        )
        return saved


def _day(value: Any) -> str | None:
    if value is None:
        return None
    return str(np.datetime64(value, "D"))


def _ordered(counts: Mapping[str, float]) -> dict[str, Any]:
    return {r: counts[r] for r in REGIMES if r in counts}
