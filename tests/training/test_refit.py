"""The refit (docs/training.md, "The refit"): a promoted candidate's members are fitted again on
every labelled row and serve; the gate keeps comparing with the members as validated.

The store holds the bundled S&P 500 from 2008 (about 2,700 labelled rows, no archive), labelled
by the sign of a feature so that a candidate shows skill and is promoted. Beside LightGBM the
ensemble has `Memory`, a model of the user's own defined here: it answers "up" for exactly the
rows it was fitted on, so what a served member has seen is read from its behaviour. It never
beats chance on the vote holdout, so its vote weight is 0 and the ensemble's calls are
LightGBM's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.config import Config, parse_config
from daemon.registry.serving import LoadedModel, load_champion
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from daemon.training.report import RetrainReport
from daemon.training.trainer import retrain

HERE = "tests.training.test_refit"


class Memory:
    """P(up) is 1 for a row it was fitted on and 0.5 for any other: its calls (P > 0.5) are
    exactly the rows it saw."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Memory:
        self.classes_ = np.array([0, 1])
        self.rows_ = np.unique(np.ascontiguousarray(X, dtype=np.float32), axis=0)
        return self

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        seen = {row.tobytes() for row in self.rows_}
        rows = np.ascontiguousarray(X, dtype=np.float32)
        p = np.array([1.0 if row.tobytes() in seen else 0.5 for row in rows])
        return np.column_stack([1.0 - p, p])


class Bounded(Memory):
    """A `Memory` that refuses to fit more than `max_rows` rows (a member that fits the
    validated part but not the refit's larger one)."""

    def __init__(self, max_rows: int = 2000) -> None:
        self.max_rows = max_rows

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Memory:
        if len(X) > self.max_rows:
            raise ValueError(f"{len(X)} rows: at most {self.max_rows}")
        return super().fit(X, y, sample_weight)


def _config(
    db: Path, *, refit: bool = True, min_edge: float = 0.0, memory: str = "Memory"
) -> Config:
    return parse_config(
        f'[store]\npath = "{db}"\n'
        f'[training]\nmodels = ["lightgbm", "memory"]\nrefit = {str(refit).lower()}\n'
        f"[gate]\nmin_edge = {min_edge}\n"
        "[models.lightgbm]\nn_estimators = 30\n"
        f'[models.memory]\nfactory = "{HERE}:{memory}"\ntrusted = ["{HERE}.{memory}"]\n',
        env={},
    )


def _labelled(config: Config) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float32]]:
    """The stored labelled rows' days and features, in the trainer's order."""
    with Store.open(config.store) as store:
        meta, X = store.read_samples(source=None, labelled=True)
    return meta["ts"].to_numpy(dtype="datetime64[D]"), np.asarray(X)


def _champion(config: Config) -> LoadedModel:
    with Store.open(config.store) as store:
        loaded = load_champion(config, store)
    assert loaded is not None
    return loaded


def _seen(model: Any, X: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Which rows of X a `Memory` member was fitted on."""
    return np.asarray(model.predict_proba(X))[:, 1] > 0.5


def test_a_promoted_champion_is_refit_on_every_labelled_row(db):
    config = _config(db)
    report = retrain(config)
    assert report.promoted, report.reason
    days, X = _labelled(config)
    newest = str(days.max())

    # the report: fit, then vote weights, then validation, each on later days; the refit on all
    w = report.windows
    assert w is not None and w.fit and w.vote and w.validation and w.refit
    assert w.fit.first == str(days.min()) and w.fit.last < w.vote.first
    assert w.vote.last < w.validation.first and w.validation.last == newest
    assert (w.refit.first, w.refit.last, w.refit.rows) == (str(days.min()), newest, len(days))
    assert set(w.refit_fit_seconds) == {"lightgbm", "memory"} and w.refit_note is None
    assert RetrainReport.from_json(report.to_json()) == report
    assert report.to_json()["windows"]["refit"]["last"] == newest

    # the served members saw the newest labelled days; the validated ones never the validation
    loaded = _champion(config)
    validation = days >= np.datetime64(w.validation.first)
    served = _seen(loaded.ensemble.models["memory"], X[validation])
    assert served.mean() > 0.5
    assert _seen(loaded.ensemble.models["memory"], X[days >= days.max() - 14]).any()
    assert not _seen(loaded.validated.models["memory"], X[validation]).any()
    assert loaded.ensemble.vote == loaded.validated.vote  # the validated vote weights serve

    # the bundle keeps both parts, every file pinned by the manifest the registry hashes
    assert report.artifact is not None and report.artifact.path is not None
    manifest = json.loads((Path(report.artifact.path) / "manifest.json").read_text())
    assert manifest["format"] == "regimed-bundle/2"
    parts = sorted((e.get("part", "served"), e["model"]) for e in manifest["files"])
    assert parts == [
        ("served", "lightgbm"), ("served", "memory"),
        ("validated", "lightgbm"), ("validated", "memory"),
    ]  # fmt: skip
    # the drift reference describes the rows the served members saw
    assert manifest["meta"]["drift_reference"]


def test_the_gate_compares_with_the_validated_members_and_unchanged_data_adds_no_version(db):
    config = _config(db)
    first = retrain(config)
    assert first.promoted, first.reason
    days, X = _labelled(config)
    loaded = _champion(config)
    assert first.windows is not None and first.windows.validation is not None
    val = X[days >= np.datetime64(first.windows.validation.first)]
    # the refit members answer otherwise on the validation rows than the validated ones
    assert not np.allclose(loaded.ensemble.proba(val), loaded.validated.proba(val))

    second = retrain(config, trigger="schedule")
    assert second.gate is not None and second.gate.rule == "unchanged", second.reason
    assert (second.promoted, second.outcome, second.version) == (False, "unchanged", None)
    assert second.windows is not None and second.windows.refit is None
    assert second.windows.refit_note == "not refit: unchanged, no version added"
    # the champion's scores are the validated ensemble's, the first run's own validation
    assert second.champion is not None and first.validation is not None
    assert second.champion.overall == first.validation.overall
    with Store.open(config.store) as store:
        assert [m.version for m in Registry(store).models()] == [first.version]


def test_with_refit_off_the_validated_members_serve(db):
    config = _config(db, refit=False)
    report = retrain(config)
    assert report.promoted, report.reason
    assert report.windows is not None and report.windows.refit is None
    assert report.windows.refit_note == "not refit: training.refit is off"
    assert report.windows.refit_fit_seconds == {}
    days, X = _labelled(config)
    loaded = _champion(config)
    assert loaded.validated is loaded.ensemble
    assert report.windows.validation is not None
    val = X[days >= np.datetime64(report.windows.validation.first)]
    assert not _seen(loaded.ensemble.models["memory"], val).any()
    assert report.artifact is not None and report.artifact.path is not None
    manifest = json.loads((Path(report.artifact.path) / "manifest.json").read_text())
    assert manifest["format"] == "regimed-bundle/1"
    assert not any("part" in e for e in manifest["files"])


def test_a_rejected_candidate_is_not_refit(db):
    report = retrain(_config(db, min_edge=0.9))
    assert not report.promoted and report.gate is not None
    assert report.gate.rule == "naive_edge"
    assert report.windows is not None and report.windows.refit is None
    assert report.windows.refit_note == "not refit: the candidate was not promoted"


def test_a_champion_bundle_without_a_validated_part_still_loads_and_compares(db):
    # refit off writes the bundle as regimed wrote it before refits: no validated part
    first = retrain(_config(db, refit=False))
    assert first.promoted, first.reason
    config = _config(db)
    loaded = _champion(config)
    assert loaded.validated is loaded.ensemble
    second = retrain(config)
    assert second.champion_error is None and second.champion is not None
    assert second.gate is not None and second.gate.rule == "unchanged", second.reason
    assert first.validation is not None
    assert second.champion.overall == first.validation.overall


def test_a_member_that_fails_to_refit_leaves_the_validated_members_serving(db):
    # the members fit ~1,700 rows; the refit's ~2,700 are too many for `Bounded`
    report = retrain(_config(db, memory="Bounded"))
    assert report.promoted, report.reason
    w = report.windows
    assert w is not None and w.refit is None and w.refit_note is not None
    assert w.refit_note.startswith("not refit: memory: ")
    assert w.refit_note.endswith("; the validated members serve")
    assert "rows: at most 2000" in w.refit_note
    loaded = _champion(_config(db, memory="Bounded"))
    assert loaded.validated is loaded.ensemble  # one set of members, as validated
