"""Drift: how far live features moved from the champion's training data, whether the champion's
live errors got worse, and when either should start a retrain.

Feature drift is a population stability index (PSI) per feature, computed *within each regime*:
the live crash rows are compared with the training crash rows, the live calm rows with the
training calm rows. Entering a crash moves every volatility feature far from the calm training
rows, but the model was trained on crash rows too (the rare-event archive sees to that), so a
regime change alone is not drift; a crash that looks unlike every training crash is.

`Reference` holds, per regime, quantile bin edges of each feature in the training rows and the
training counts per bin; it is small and JSON-serialisable, and is stored in the model's
manifest. `DriftMonitor` keeps the newest `drift.live_window` feature rows per regime and turns
them into a `DriftCheck`. `ErrorStream` runs River's ADWIN on the 0/1 errors of matured
predictions (concept drift). `DriftTrigger` decides when a retrain fires.

The drift score is the mean over features of the per-feature PSI, each capped at
`drift.psi_cap`. The mean uses every feature, so one noisy feature moves it by a 47th of its
noise; the cap bounds what a single broken feature (a feed switching to adjusted prices, a
volume column of zeros) can add, so it takes a shift of several features to fire a retrain.
The share of features above a PSI level was the alternative; it throws away how far features
moved and, on the bundled histories, separated shifts from no shift less well.

Why the default `drift.threshold` (0.75) is far above the textbook 0.1/0.25 of a single PSI:
the features of a daily series are strongly autocorrelated (a 63-day volatility or a
200-day moving-average distance changes little from one day to the next), so a window of 500
rows holds few independent observations and the PSI of such features between any two periods
is large even when nothing changed. Measured on the bundled S&P 500 and NASDAQ histories
(reference: the five years before 1 January of 2005..2017, live: the next up to 500 rows per
regime, VIX proxy throughout), the score with no change was 0.27-0.69 (median 0.51); with the
live volatility features doubled it was 0.71-1.07 (median 0.89). 0.75 stays above every
unchanged period, so a drift retrain means a shift of about that size; smaller shifts are left to
the weekly retrain. A shorter reference is noisier (with three years the unchanged score reached
1.0), so the threshold assumes the champion was trained on several years of rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from river.drift import ADWIN

from daemon.config.drift import DriftConfig
from daemon.errors import DataError

__all__ = [
    "REFERENCE_FORMAT",
    "DriftCheck",
    "DriftMonitor",
    "DriftTrigger",
    "ErrorStream",
    "Reference",
    "RegimeReference",
    "build_reference",
    "psi",
]

#: Version of the `Reference.as_dict()` layout; bump when it changes.
REFERENCE_FORMAT: Final = 1
#: Proportion used for an empty bin, so PSI stays finite (at most about 9.2 per bin pair).
PSI_EPSILON: Final = 1e-4

F32 = npt.NDArray[np.float32]
SkipReason = Literal["no_reference", "too_few_rows"]
TriggerReason = Literal["feature_drift", "concept_drift"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the training reference --------------------------------------------------------------------


@dataclass(frozen=True)
class RegimeReference:
    """The training rows of one regime, binned: per feature, the ascending bin edges and the
    count of training rows per bin. Bin i holds edges[i-1] < x <= edges[i] (open ends below the
    first and above the last edge), and the last count is the NaN bin, so a feature has
    `len(edges) + 2` counts. The first edge lies just below the training minimum, so live values
    below anything seen in training get a bin of their own."""

    rows: int
    edges: tuple[tuple[float, ...], ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Reference:
    """Per-regime binned training features of a model, as stored in its manifest."""

    features: tuple[str, ...]
    bins: int
    regimes: Mapping[str, RegimeReference] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the model manifest (`from_dict` reads it back)."""
        return {
            "format": REFERENCE_FORMAT,
            "features": list(self.features),
            "bins": self.bins,
            "regimes": {
                name: {
                    "rows": ref.rows,
                    "edges": [list(e) for e in ref.edges],
                    "counts": [list(c) for c in ref.counts],
                }
                for name, ref in sorted(self.regimes.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        """Read `as_dict()` output back; a malformed document raises `DataError` naming the key
        (a manifest is a file on disk and may be damaged)."""
        where = "drift reference"
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected an object, got {type(data).__name__}")
        if data.get("format") != REFERENCE_FORMAT:
            raise DataError(f"{where}.format = {data.get('format')!r}: expected {REFERENCE_FORMAT}")
        features = data.get("features")
        if (
            not isinstance(features, list)
            or not features
            or not all(isinstance(f, str) for f in features)
        ):
            raise DataError(f"{where}.features: expected a non-empty list of feature names")
        bins = data.get("bins")
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
            raise DataError(f"{where}.bins = {bins!r}: expected an integer >= 2")
        raw = data.get("regimes")
        if not isinstance(raw, Mapping):
            raise DataError(f"{where}.regimes: expected an object of regime name -> bins")
        regimes = {
            str(name): _regime_from_dict(f"{where}.regimes.{name}", body, len(features))
            for name, body in raw.items()
        }
        return cls(tuple(features), bins, regimes)


def _regime_from_dict(where: str, body: Any, n_features: int) -> RegimeReference:
    if not isinstance(body, Mapping):
        raise DataError(f"{where}: expected an object with rows, edges and counts")
    rows = body.get("rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise DataError(f"{where}.rows = {rows!r}: expected an integer >= 1")
    edges, counts = body.get("edges"), body.get("counts")
    if not isinstance(edges, list) or len(edges) != n_features:
        raise DataError(f"{where}.edges: expected {n_features} lists, one per feature")
    if not isinstance(counts, list) or len(counts) != n_features:
        raise DataError(f"{where}.counts: expected {n_features} lists, one per feature")
    out_edges: list[tuple[float, ...]] = []
    out_counts: list[tuple[int, ...]] = []
    for j, (e, c) in enumerate(zip(edges, counts, strict=True)):
        if not isinstance(e, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in e
        ):
            raise DataError(f"{where}.edges[{j}]: expected a list of finite numbers")
        if any(b <= a for a, b in itertools.pairwise(e)):
            raise DataError(f"{where}.edges[{j}]: expected strictly ascending edges")
        if (
            not isinstance(c, list)
            or len(c) != len(e) + 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in c)
        ):
            raise DataError(
                f"{where}.counts[{j}]: expected {len(e) + 2} counts >= 0 "
                "(one per bin, then the NaN bin)"
            )
        if sum(c) != rows:
            raise DataError(f"{where}.counts[{j}]: sum {sum(c)} differs from rows = {rows}")
        out_edges.append(tuple(float(v) for v in e))
        out_counts.append(tuple(c))
    return RegimeReference(rows, tuple(out_edges), tuple(out_counts))


def _as_matrix(x: npt.ArrayLike, where: str, n_features: int | None = None) -> F32:
    matrix = np.asarray(x, dtype=np.float32)
    if matrix.ndim != 2:
        raise DataError(f"{where}: expected a 2-D array of feature rows, got {matrix.ndim}-D")
    if n_features is not None and matrix.shape[1] != n_features:
        raise DataError(
            f"{where}: feature rows have {matrix.shape[1]} columns, expected {n_features}"
        )
    return matrix


def _as_labels(regimes: Sequence[str] | npt.ArrayLike, n: int, where: str) -> npt.NDArray[Any]:
    labels = np.asarray(regimes, dtype=object).astype(str)
    if labels.shape != (n,):
        raise DataError(f"{where}: {labels.size} regime labels for {n} feature rows")
    return labels


def _bin_codes(values: F32, edges: F32) -> npt.NDArray[np.intp]:
    codes = np.searchsorted(edges, values, side="left")
    codes[np.isnan(values)] = len(edges) + 1
    return codes


def _edges(values: F32, bins: int) -> F32:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0, dtype=np.float32)
    cuts = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
    lowest = finite.min()
    # The edge just below the training minimum; float32's lowest value has none (it stays
    # finite so the reference remains valid JSON, and that one value counts as "below").
    below = (
        lowest if lowest == np.finfo(np.float32).min else np.nextafter(lowest, np.float32(-np.inf))
    )
    return np.unique(np.concatenate([[below], cuts]).astype(np.float32))


def build_reference(
    x_train: npt.ArrayLike,
    regimes: Sequence[str] | npt.ArrayLike,
    feature_names: Sequence[str],
    *,
    bins: int = 10,
    min_rows: int = 100,
) -> Reference:
    """The drift reference of a model from its training feature rows and their regimes.

    Pass the training rows before regime-balanced resampling (duplicated rows would not change
    the quantiles much, but they are not what the model saw more of). Regimes with fewer than
    `min_rows` rows get no reference and are never checked. Any labels work as regimes; one
    label for every row gives the pooled, regime-unconditional reference.
    """
    features = tuple(feature_names)
    matrix = _as_matrix(x_train, "build_reference: x_train", len(features))
    labels = _as_labels(regimes, matrix.shape[0], "build_reference: regimes")
    out: dict[str, RegimeReference] = {}
    for name in sorted(set(labels.tolist())):
        rows = matrix[labels == name]
        if rows.shape[0] < min_rows:
            continue
        edges: list[tuple[float, ...]] = []
        counts: list[tuple[int, ...]] = []
        for column in rows.T:
            e = _edges(column, bins)
            c = np.bincount(_bin_codes(column, e), minlength=e.size + 2)
            # str() of a float32 is its shortest exact spelling: a short manifest, exact reload.
            edges.append(tuple(float(str(v)) for v in e))
            counts.append(tuple(int(v) for v in c))
        out[name] = RegimeReference(int(rows.shape[0]), tuple(edges), tuple(counts))
    return Reference(features, bins, out)


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two histograms over the same bins (counts or
    proportions): sum of (a - e) * ln(a / e) over the proportions, an empty bin counting as
    `epsilon`. 0 means the same distribution; 0.1 and 0.25 are the usual marks of a moderate and
    a significant shift for independent samples."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"psi: histograms of shapes {e.shape} and {a.shape} do not match")
    e = np.maximum(e / max(e.sum(), 1.0), epsilon)
    a = np.maximum(a / max(a.sum(), 1.0), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


# --- the live side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftCheck:
    """One drift check.

    `feature_psi`: per feature, its PSI averaged over the checked regimes weighted by their live
    rows (empty when no regime could be checked). `score`: the mean over features of
    `min(feature_psi, psi_cap)` (0 when nothing was checked). `by_regime`: the same score per
    checked regime. `rows`: live rows per regime, checked or not. `skipped`: why a regime with
    live rows was not checked.
    """

    feature_psi: dict[str, float]
    score: float
    by_regime: dict[str, float]
    rows: dict[str, int]
    skipped: dict[str, SkipReason]

    @property
    def ready(self) -> bool:
        """Whether any regime had a reference and enough live rows to be checked."""
        return bool(self.by_regime)

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The `n` features that moved most, largest PSI first (for logs and alerts)."""
        return sorted(self.feature_psi.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class _Window:
    """The newest `capacity` rows of one regime (a ring buffer; order does not matter)."""

    def __init__(self, capacity: int, n_features: int) -> None:
        self.data: F32 = np.empty((capacity, n_features), dtype=np.float32)
        self.size = 0
        self.next = 0

    def extend(self, rows: F32) -> None:
        capacity = self.data.shape[0]
        rows = rows[-capacity:]
        index = (self.next + np.arange(rows.shape[0])) % capacity
        self.data[index] = rows
        self.next = int((self.next + rows.shape[0]) % capacity)
        self.size = min(self.size + rows.shape[0], capacity)

    def rows(self) -> F32:
        return self.data[: self.size]


@dataclass(frozen=True)
class _Binned:
    edges: tuple[F32, ...]
    counts: tuple[npt.NDArray[np.int64], ...]


class DriftMonitor:
    """Keeps the newest `drift.live_window` live feature rows per regime and compares them with
    the champion's `Reference`.

    Feed it every scored feature row (`observe`); at start-up, feed it the newest stored live
    samples so a restart does not begin with empty windows. Not thread-safe: call it from one
    thread (the consumer's).
    """

    def __init__(self, reference: Reference | None, config: DriftConfig) -> None:
        self._config = config
        self._windows: dict[str, _Window] = {}
        self._n_features: int | None = None
        self._reference: Reference | None = None
        self._binned: dict[str, _Binned] = {}
        self.set_reference(reference)

    @property
    def reference(self) -> Reference | None:
        return self._reference

    def set_reference(self, reference: Reference | None) -> None:
        """Compare with a new champion's reference from now on. The live windows are kept
        unless the feature layout changed (then they are emptied: old rows do not fit)."""
        if reference is not None:
            if self._n_features not in (None, len(reference.features)):
                self._windows.clear()
            self._n_features = len(reference.features)
        self._reference = reference
        self._binned = {
            name: _Binned(
                tuple(np.asarray(e, dtype=np.float32) for e in ref.edges),
                tuple(np.asarray(c, dtype=np.int64) for c in ref.counts),
            )
            for name, ref in (reference.regimes.items() if reference else ())
        }

    def observe(self, x_rows: npt.ArrayLike, regimes: Sequence[str] | npt.ArrayLike) -> None:
        """Add live feature rows (one per scored bar) with the regime of each row."""
        matrix = _as_matrix(x_rows, "drift: observed rows", self._n_features)
        labels = _as_labels(regimes, matrix.shape[0], "drift: observed regimes")
        self._n_features = matrix.shape[1]
        for name in dict.fromkeys(labels.tolist()):
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = _Window(self._config.live_window, matrix.shape[1])
            window.extend(matrix[labels == name])

    def rows(self) -> dict[str, int]:
        """Live rows held per regime."""
        return {name: w.size for name, w in sorted(self._windows.items())}

    def check(self) -> DriftCheck:
        """Compare each regime's live window with its training reference."""
        config = self._config
        rows = self.rows()
        skipped: dict[str, SkipReason] = {}
        per_regime: dict[str, npt.NDArray[np.float64]] = {}
        for name, n in rows.items():
            binned = self._binned.get(name)
            if binned is None:
                skipped[name] = "no_reference"
            elif n < config.min_live_rows:
                skipped[name] = "too_few_rows"
            else:
                live = self._windows[name].rows()
                per_regime[name] = np.array(
                    [
                        psi(counts, np.bincount(_bin_codes(column, edges), minlength=counts.size))
                        for column, edges, counts in zip(
                            live.T, binned.edges, binned.counts, strict=True
                        )
                    ]
                )
        if not per_regime or self._reference is None:
            return DriftCheck({}, 0.0, {}, rows, skipped)
        weights = np.array([rows[name] for name in per_regime], dtype=np.float64)
        pooled = np.average(np.stack(list(per_regime.values())), axis=0, weights=weights)
        return DriftCheck(
            feature_psi=dict(zip(self._reference.features, pooled.tolist(), strict=True)),
            score=self._score(pooled),
            by_regime={name: self._score(v) for name, v in per_regime.items()},
            rows=rows,
            skipped=skipped,
        )

    def _score(self, feature_psi: npt.NDArray[np.float64]) -> float:
        return float(np.mean(np.minimum(feature_psi, self._config.psi_cap)))


# --- concept drift ------------------------------------------------------------------------------


class ErrorStream:
    """Concept drift: River's ADWIN over the 0/1 errors of matured predictions.

    ADWIN finds a change of the error rate in either direction; only a rise is a reason to
    retrain, so each detection is classed by whether the error rate of the window ADWIN keeps
    is above its value just before. `take_alarm()` reports a rise once.
    """

    def __init__(self, delta: float = 0.002) -> None:
        self._adwin = ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self.seen = 0
        self.detections = 0
        self.rises = 0
        self._alarm = False

    def update(self, errors: Iterable[bool | int]) -> int:
        """Feed errors (1/True: the prediction was wrong), oldest first; returns how many rises
        of the error rate ADWIN detected among them."""
        rises = 0
        for error in errors:
            before = self._adwin.estimation
            self._adwin.update(1.0 if error else 0.0)  # type: ignore[no-untyped-call]
            self.seen += 1
            if self._adwin.drift_detected:
                self.detections += 1
                if self._adwin.estimation > before:
                    rises += 1
        self.rises += rises
        self._alarm = self._alarm or rises > 0
        return rises

    @property
    def error_rate(self) -> float:
        """The error rate over ADWIN's window (the recent stretch with no detected change);
        NaN before the first error arrives."""
        return float(self._adwin.estimation) if self._adwin.width else math.nan

    def take_alarm(self) -> bool:
        """True once after the error rate rose (since the previous call), then False."""
        alarm, self._alarm = self._alarm, False
        return alarm


# --- the trigger --------------------------------------------------------------------------------


class DriftTrigger:
    """Decides when drift starts a retrain, with a debounce and a cooldown.

    `update` is called once per drift check with the check's score and whether the live error
    rate rose (`ErrorStream.take_alarm()`). It returns True when a retrain should start: the
    score has been above `drift.threshold` for `drift.sustain` consecutive checks, or (with
    `drift.concept_drift_triggers`) ADWIN saw the error rate rise; ADWIN already waits for
    significant evidence, so that needs no debounce. Either way at most one retrain per
    `drift.cooldown_hours`; a drift that persists fires again once the cooldown has passed.

    When `update` returned True but a retrain is already running, call `note_busy()` instead of
    starting one: it is counted, and the cooldown stays armed, because the running retrain
    trains on the same drifted window a drift retrain would.

    Counters are plain ints for the metrics: `checks`, `fired` (every True), `skipped_busy`,
    `suppressed_cooldown` (would have fired but for the cooldown). `clock` returns an aware
    datetime; `last_fired` seeds the cooldown (e.g. from the registry's last drift retrain).
    """

    def __init__(
        self,
        config: DriftConfig,
        clock: Callable[[], dt.datetime] = _utcnow,
        last_fired: dt.datetime | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._cooldown = dt.timedelta(hours=config.cooldown_hours)
        self.last_fired = last_fired
        self.last_reason: TriggerReason | None = None
        self.streak = 0
        self.checks = 0
        self.fired = 0
        self.skipped_busy = 0
        self.suppressed_cooldown = 0

    def update(self, score: float, concept_drift: bool = False) -> bool:
        """Record one drift check; True when a drift retrain should start now."""
        config = self._config
        self.checks += 1
        self.streak = self.streak + 1 if score > config.threshold else 0  # NaN is not above
        reason: TriggerReason | None = None
        if self.streak >= config.sustain:
            reason = "feature_drift"
        elif concept_drift and config.concept_drift_triggers:
            reason = "concept_drift"
        if reason is None or not config.enabled:
            return False
        now = self._clock()
        if self.last_fired is not None and now - self.last_fired < self._cooldown:
            self.suppressed_cooldown += 1
            return False
        self.last_fired = now
        self.last_reason = reason
        self.fired += 1
        return True

    def note_busy(self) -> None:
        """Count a trigger that was skipped because a retrain was already running."""
        self.skipped_busy += 1

    def reset(self) -> None:
        """Forget the run of high scores (call when a new champion and reference take over:
        scores against the old reference say nothing about the new one)."""
        self.streak = 0

    @property
    def next_allowed(self) -> dt.datetime | None:
        """When the cooldown ends (None when no drift retrain has fired)."""
        return None if self.last_fired is None else self.last_fired + self._cooldown
