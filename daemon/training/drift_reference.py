"""The training reference of drift: per regime, quantile bin edges of each feature in the
training rows and the training counts per bin (`Reference`, `build_reference`); small and
JSON-serialisable, stored in the model's manifest. The trainer builds it; the daemon's drift
monitor (daemon.monitor.drift) reads it back and bins live rows with the same helpers
(`as_matrix`, `as_labels`, `bin_codes`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from daemon.errors import DataError

__all__ = [
    "F32",
    "REFERENCE_FORMAT",
    "Reference",
    "RegimeReference",
    "as_labels",
    "as_matrix",
    "bin_codes",
    "build_reference",
]

#: Version of the `Reference.as_dict()` layout; bump when it changes.
REFERENCE_FORMAT: Final = 1

F32 = npt.NDArray[np.float32]


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


def as_matrix(x: npt.ArrayLike, where: str, n_features: int | None = None) -> F32:
    """Feature rows as a 2-D float32 array; `DataError` naming `where` when the shape is not
    that of rows of `n_features` columns."""
    matrix = np.asarray(x, dtype=np.float32)
    if matrix.ndim != 2:
        raise DataError(f"{where}: expected a 2-D array of feature rows, got {matrix.ndim}-D")
    if n_features is not None and matrix.shape[1] != n_features:
        raise DataError(
            f"{where}: feature rows have {matrix.shape[1]} columns, expected {n_features}"
        )
    return matrix


def as_labels(regimes: Sequence[str] | npt.ArrayLike, n: int, where: str) -> npt.NDArray[Any]:
    """The regime of each of `n` rows as strings; `DataError` naming `where` on a mismatch."""
    labels = np.asarray(regimes, dtype=object).astype(str)
    if labels.shape != (n,):
        raise DataError(f"{where}: {labels.size} regime labels for {n} feature rows")
    return labels


def bin_codes(values: F32, edges: F32) -> npt.NDArray[np.intp]:
    """The bin of each value under `edges` (see `RegimeReference`; NaN: the last bin)."""
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
    matrix = as_matrix(x_train, "build_reference: x_train", len(features))
    labels = as_labels(regimes, matrix.shape[0], "build_reference: regimes")
    out: dict[str, RegimeReference] = {}
    for name in sorted(set(labels.tolist())):
        rows = matrix[labels == name]
        if rows.shape[0] < min_rows:
            continue
        edges: list[tuple[float, ...]] = []
        counts: list[tuple[int, ...]] = []
        for column in rows.T:
            e = _edges(column, bins)
            c = np.bincount(bin_codes(column, e), minlength=e.size + 2)
            # str() of a float32 is its shortest exact spelling: a short manifest, exact reload.
            edges.append(tuple(float(str(v)) for v in e))
            counts.append(tuple(int(v) for v in c))
        out[name] = RegimeReference(int(rows.shape[0]), tuple(edges), tuple(counts))
    return Reference(features, bins, out)
