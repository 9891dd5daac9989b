"""The retrain report as a typed value: what `retrain()` returns, `regimed retrain --json`
prints, the registry stores (as JSON, in the report column of `models` and `retrain_runs`) and
`regimed report` renders.

`RetrainReport.from_json` is the one place that reads a stored report: every key may be
missing or null (a failed run stops part way; older rows, hand-registered models, a report
cut short), and a value of the wrong type counts as missing. A section that is missing, null,
not an object or empty (`{}`) is None. Keys it does not know are kept in `extra` and written
back after the known ones, so a report of a newer version survives a round trip.

`to_json()` writes the JSON the trainer has always written, key for key and in the same order:
`RetrainReport.from_json(doc).to_json() == doc` for every report a retrain produces, finished
or failed at any step. Null scores stay null (too few validation rows), never 0.

This module holds the scores, the gate and the report itself; the sections that describe the
data and the fit, and the readers of JSON values, are in `daemon.training.report_sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from daemon.training.placement import Placement
from daemon.training.report_diagnostics import Diagnostics
from daemon.training.report_sections import (
    Artifact,
    Confusion,
    DataWindow,
    EnsembleVote,
    Split,
    TrainingMix,
    Window,
    Windows,
    regime_order,
)
from daemon.training.report_sections import as_count as _count
from daemon.training.report_sections import as_int as _int
from daemon.training.report_sections import as_interval as _interval
from daemon.training.report_sections import as_mapping as _dict
from daemon.training.report_sections import as_matrix as _matrix
from daemon.training.report_sections import as_number as _num
from daemon.training.report_sections import as_numbers as _numbers
from daemon.training.report_sections import as_section as _obj
from daemon.training.report_sections import as_text as _str

if TYPE_CHECKING:  # annotations only: this module of plain values loads no numeric library
    from daemon.training.scoring import Score, Scores

__all__ = [
    "EMPTY_CELL",
    "Artifact",
    "Comparison",
    "Confusion",
    "DataWindow",
    "Diagnostics",
    "EnsembleVote",
    "Figure",
    "Gate",
    "ModelScores",
    "RetrainReport",
    "ScoreCell",
    "ScoreTable",
    "Split",
    "TrainingMix",
    "Validation",
    "Window",
    "Windows",
    "regime_order",
]

# -- scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreCell:
    """The figures of one group of validation rows; None where too few rows to score (or, for
    balanced accuracy, one true label only), or where the report does not say."""

    n: int | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None

    @classmethod
    def of(cls, score: Score) -> ScoreCell:
        return cls(score.n, score.accuracy, score.balanced_accuracy)

    @classmethod
    def from_json(cls, doc: object) -> ScoreCell:
        d = _dict(doc)
        return cls(_int(d.get("n")), _num(d.get("accuracy")), _num(d.get("balanced_accuracy")))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


#: A group the report has no figures for.
EMPTY_CELL = ScoreCell()


def _cells(doc: object) -> dict[str, ScoreCell]:
    return {str(r): ScoreCell.from_json(c) for r, c in _dict(doc).items()}


def _cells_json(cells: Mapping[str, ScoreCell]) -> dict[str, Any]:
    return {r: c.to_json() for r, c in cells.items()}


def _cell_or_none(doc: object) -> ScoreCell | None:
    found = _obj(doc)
    return None if found is None else ScoreCell.from_json(found)


@dataclass(frozen=True)
class ScoreTable:
    """Scores per regime and overall (the ensemble's, a base model's, a reference's or the
    champion's on the same validation rows)."""

    per_regime: Mapping[str, ScoreCell] = field(default_factory=dict)
    overall: ScoreCell | None = None

    @classmethod
    def of(cls, scores: Scores) -> ScoreTable:
        return cls(
            {r: ScoreCell.of(s) for r, s in scores.per_regime.items()},
            ScoreCell.of(scores.overall),
        )

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ScoreTable:
        return cls(_cells(doc.get("per_regime")), _cell_or_none(doc.get("overall")))

    def to_json(self) -> dict[str, Any]:
        return {
            "per_regime": _cells_json(self.per_regime),
            "overall": None if self.overall is None else self.overall.to_json(),
        }

    def regime(self, name: str) -> ScoreCell:
        """The cell of regime `name`; EMPTY_CELL when the report has none."""
        return self.per_regime.get(name, EMPTY_CELL)

    @property
    def total(self) -> ScoreCell:
        """The overall cell; EMPTY_CELL when the report has none."""
        return self.overall or EMPTY_CELL


@dataclass(frozen=True)
class ModelScores:
    """A base model's (or a naive reference's) validation scores; `fit_seconds` for models."""

    accuracy: float | None = None
    balanced_accuracy: float | None = None
    fit_seconds: float | None = None
    per_regime: Mapping[str, ScoreCell] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: object) -> ModelScores:
        d = _dict(doc)
        return cls(
            _num(d.get("accuracy")),
            _num(d.get("balanced_accuracy")),
            _num(d.get("fit_seconds")),
            _cells(d.get("per_regime")),
        )

    def to_json(self, *, fit_seconds: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
        }
        if fit_seconds:
            out["fit_seconds"] = self.fit_seconds
        out["per_regime"] = _cells_json(self.per_regime)
        return out

    @property
    def table(self) -> ScoreTable:
        """As a table; its overall cell has no `n` (the report keeps the model's overall
        figures at its top level, beside the per-regime ones)."""
        return ScoreTable(self.per_regime, ScoreCell(None, self.accuracy, self.balanced_accuracy))


@dataclass(frozen=True)
class Validation:
    """The candidate ensemble's validation scores, the naive references' (`baselines`) and
    every base model's (`models`, the ensemble included)."""

    per_regime: Mapping[str, ScoreCell] = field(default_factory=dict)
    overall: ScoreCell | None = None
    baselines: Mapping[str, ModelScores] = field(default_factory=dict)
    models: Mapping[str, ModelScores] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Validation:
        return cls(
            _cells(doc.get("per_regime")),
            _cell_or_none(doc.get("overall")),
            {str(k): ModelScores.from_json(v) for k, v in _dict(doc.get("baselines")).items()},
            {str(k): ModelScores.from_json(v) for k, v in _dict(doc.get("models")).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "per_regime": _cells_json(self.per_regime),
            "overall": None if self.overall is None else self.overall.to_json(),
            "baselines": {k: v.to_json(fit_seconds=False) for k, v in self.baselines.items()},
            "models": {k: v.to_json(fit_seconds=True) for k, v in self.models.items()},
        }

    @property
    def ensemble(self) -> ScoreTable:
        """The candidate ensemble's scores as a table."""
        return ScoreTable(self.per_regime, self.overall)


@dataclass(frozen=True)
class Figure:
    """One overall figure (balanced accuracy, accuracy, AUC or Brier score) and its 95%
    bootstrap interval; None where there were too few rows or the figure is undefined."""

    value: float | None = None
    interval: tuple[float, float] | None = None

    @classmethod
    def from_json(cls, doc: object) -> Figure:
        d = _dict(doc)
        return cls(_num(d.get("value")), _interval(d.get("interval")))

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "interval": None if self.interval is None else list(self.interval),
        }


def _skill(doc: object) -> dict[str, dict[str, Figure]]:
    return {
        str(who): {str(m): Figure.from_json(f) for m, f in _dict(figures).items()}
        for who, figures in _dict(doc).items()
        if _obj(figures)
    }


@dataclass(frozen=True)
class Comparison:
    """The candidate minus `against` on the gate metric over `n` shared validation rows: the
    point difference and its 95% paired bootstrap interval (None: not computed, the point
    stands in for both bounds)."""

    against: str = ""
    difference: float = 0.0
    interval: tuple[float, float] | None = None
    n: int | None = None

    @property
    def low(self) -> float:
        return self.difference if self.interval is None else self.interval[0]

    @property
    def high(self) -> float:
        return self.difference if self.interval is None else self.interval[1]

    def words(self) -> str:
        """For example "+0.024 [-0.011, +0.058] over always up"."""
        return f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}] over {self.against}"

    @classmethod
    def from_json(cls, doc: object) -> Comparison | None:
        d = _dict(doc)
        difference = _num(d.get("difference"))
        if difference is None:
            return None
        return cls(
            _str(d.get("against")) or "", difference, _interval(d.get("interval")), _int(d.get("n"))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "difference": self.difference,
            "interval": None if self.interval is None else list(self.interval),
            "n": self.n,
        }


@dataclass(frozen=True)
class Gate:
    """The gate's metric, the rule that decided and the 95% bootstrap interval of candidate
    minus champion (None when there was no champion or no interval was computed); `edge`, the
    comparison with the best naive reference, and `regimes`, per regime compared with the
    champion (reports written before these existed have neither)."""

    metric: str | None = None
    rule: str | None = None
    interval: tuple[float, float] | None = None
    edge: Comparison | None = None
    regimes: Mapping[str, Comparison] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Gate:
        regimes = {str(r): Comparison.from_json(c) for r, c in _dict(doc.get("regimes")).items()}
        return cls(
            _str(doc.get("metric")),
            _str(doc.get("rule")),
            _interval(doc.get("interval")),
            Comparison.from_json(doc.get("edge")),
            {r: c for r, c in regimes.items() if c is not None},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "rule": self.rule,
            "interval": None if self.interval is None else list(self.interval),
        }
        if self.edge is not None:
            out["edge"] = self.edge.to_json()
        if self.regimes:
            out["regimes"] = {r: c.to_json() for r, c in self.regimes.items()}
        return out


# -- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainReport:
    """One retrain's report. A failed run has `outcome` "failed", `promoted` False, the
    sections of the steps it finished and None for the others."""

    trigger: str | None = None
    #: who ran it: the daemon's group member id and host (daemon.training.window.ran_by)
    ran_by: str | None = None
    version: str | None = None
    split: Split | None = None
    data_window: DataWindow | None = None
    #: the days and rows each stage saw (fit, vote, validation, refit)
    windows: Windows | None = None
    #: validation rows by source ("live", "archive")
    samples: Mapping[str, float] | None = None
    training: TrainingMix | None = None
    #: optional models that failed to fit: name -> the error
    failed_models: Mapping[str, str] | None = None
    ensemble: EnsembleVote | None = None
    validation: Validation | None = None
    #: normalized feature importances of the tree models: model -> feature -> share
    importances: Mapping[str, Mapping[str, float | None]] | None = None
    #: validation confusion matrices [[tn, fp], [fn, tp]] per model and the ensemble
    confusion: Mapping[str, Confusion] | None = None
    #: the ensemble's calibration, per-regime intervals, the market timeline, rolling scores
    diagnostics: Diagnostics | None = None
    #: the champion's scores on the same validation rows; None without a usable champion
    champion: ScoreTable | None = None
    champion_error: str | None = None
    gate: Gate | None = None
    #: overall figures with 95% intervals: "candidate", "champion", each naive reference ->
    #: metric (balanced_accuracy, accuracy, auc, brier) -> Figure
    skill: Mapping[str, Mapping[str, Figure]] | None = None
    promoted: bool | None = None
    reason: str | None = None
    outcome: str | None = None
    feature_version: int | None = None
    duration_seconds: float | None = None
    #: the peak resident memory, in bytes, of the process that ran the retrain
    #: (daemon.training.memory); None in reports written before it was recorded
    peak_rss_bytes: int | None = None
    artifact: Artifact | None = None
    #: the label target the samples were labelled for (`LabelConfig.key`)
    target: str | None = None
    #: where the models were fitted when `training.dask_scheduler` is set
    cluster: Placement | None = None
    #: keys this version does not know, kept as they were
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RetrainReport:
        """The report stored or printed as JSON; tolerant of missing keys, nulls and values of
        the wrong type (see the module's docstring)."""
        split, window = _obj(doc.get("split")), _obj(doc.get("data_window"))
        windows = _obj(doc.get("windows"))
        training = _obj(doc.get("training"))
        ensemble, validation = _obj(doc.get("ensemble")), _obj(doc.get("validation"))
        champion, gate, artifact = (
            _obj(doc.get("champion")),
            _obj(doc.get("gate")),
            _obj(doc.get("artifact")),
        )
        samples = doc.get("samples")
        failed, importances = doc.get("failed_models"), doc.get("importances")
        confusion = doc.get("confusion")
        diagnostics = _obj(doc.get("diagnostics"))
        promoted = doc.get("promoted")
        cluster = _obj(doc.get("cluster"))
        return cls(
            trigger=_str(doc.get("trigger")),
            ran_by=_str(doc.get("ran_by")),
            version=_str(doc.get("version")),
            split=None if split is None else Split.from_json(split),
            data_window=None if window is None else DataWindow.from_json(window),
            windows=None if windows is None else Windows.from_json(windows),
            samples=None
            if not isinstance(samples, Mapping)
            else {str(k): _count(v) for k, v in samples.items()},
            training=None if training is None else TrainingMix.from_json(training),
            failed_models=None
            if not isinstance(failed, Mapping)
            else {str(k): str(v) for k, v in failed.items()},
            ensemble=None if ensemble is None else EnsembleVote.from_json(ensemble),
            validation=None if validation is None else Validation.from_json(validation),
            importances=None
            if not isinstance(importances, Mapping)
            else {str(k): _numbers(v) for k, v in importances.items() if _obj(v)},
            confusion=None
            if not isinstance(confusion, Mapping)
            else {str(k): m for k, m in ((k, _matrix(v)) for k, v in confusion.items()) if m},
            diagnostics=None if diagnostics is None else Diagnostics.from_json(diagnostics),
            champion=None if champion is None else ScoreTable.from_json(champion),
            champion_error=_str(doc.get("champion_error")) or None,
            gate=None if gate is None else Gate.from_json(gate),
            skill=_skill(doc.get("skill")) or None,
            promoted=promoted if isinstance(promoted, bool) else None,
            reason=_str(doc.get("reason")),
            outcome=_str(doc.get("outcome")),
            feature_version=_int(doc.get("feature_version")),
            duration_seconds=_num(doc.get("duration_seconds")),
            peak_rss_bytes=_int(doc.get("peak_rss_bytes")),
            artifact=None if artifact is None else Artifact.from_json(artifact),
            target=_str(doc.get("target")),
            cluster=None if cluster is None else Placement.from_json(cluster),
            extra={k: v for k, v in doc.items() if k not in _KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
        """The report as the trainer writes it: absent sections left out, the champion null
        (not left out) once the gate has run, unknown keys last."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if (
                value is not None
                or name in _ALWAYS
                or (name == "champion" and self.gate is not None)
            ):
                out[name] = _json(value)
        out.update(self.extra)
        return out

    def importance(self, model: str, feature: str) -> float | None:
        """`model`'s importance of `feature`; None when the report does not rank it."""
        ranked = (self.importances or {}).get(model)
        return None if ranked is None else ranked.get(feature)


#: The report's keys in the order the trainer writes them (the order of the fields).
_FIELDS = tuple(f.name for f in fields(RetrainReport) if f.name != "extra")
_KNOWN = frozenset(_FIELDS)
#: Keys written even when null: every report has them from its first step.
_ALWAYS = frozenset({"trigger", "version"})


def _json(value: Any) -> Any:
    """A section as JSON: a typed section by its `to_json`, a mapping of plain values (or of
    confusion matrices) as lists and dicts."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value
