"""Feature drift: the population stability index (`psi`) per feature, within each regime,
between the newest live rows (`DriftMonitor`) and the champion's training `Reference`; one
`DriftCheck` per check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from daemon.config.drift import DriftConfig
from daemon.training.drift_reference import F32, Reference, as_labels, as_matrix, bin_codes

__all__ = ["PSI_EPSILON", "DriftCheck", "DriftMonitor", "psi"]

#: Proportion used for an empty bin, so PSI stays finite (at most about 9.2 per bin pair).
PSI_EPSILON: Final = 1e-4

SkipReason = Literal["no_reference", "too_few_rows"]


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
        matrix = as_matrix(x_rows, "drift: observed rows", self._n_features)
        labels = as_labels(regimes, matrix.shape[0], "drift: observed regimes")
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
                        psi(counts, np.bincount(bin_codes(column, edges), minlength=counts.size))
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
