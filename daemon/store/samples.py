"""The store's reads of samples: pending ones, counts per source and regime, and the
training read `Store.read_samples` (a row per symbol aggregated inside SQLite, decoded with
numpy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.domain import REGIMES, SOURCES, Source, check_source
from daemon.errors import StoreError
from daemon.store.connected import Connected, SqlConnection
from daemon.store.dialect import Dialect

__all__ = ["KEY_ORDER", "SAMPLE_META_COLUMNS", "SampleReads"]

KEY_ORDER: tuple[Source, ...] = ("archive", "live")  # the order of the samples primary key
SAMPLE_META_COLUMNS = ("symbol", "ts", "source", "regime", "weight", "label", "event")
_FIELD_SEP = "\x1f"  # ASCII unit separator: joins event names inside one aggregate
_REGIME_CODE = (
    "CASE regime "
    + " ".join(f"WHEN '{name}' THEN '{code}'" for code, name in enumerate(REGIMES))
    + " ELSE '9' END"
)


class SampleReads(Connected):
    """Reads of samples: pending, counted, and (meta, X) for training."""

    def pending_samples(self, source: Source = "live") -> pd.DataFrame:
        """Samples still waiting for their label, in (symbol, ts) order (no features).

        Columns: symbol, ts, source, regime, weight, label (all missing), event.
        """
        check_source("pending_samples", source)
        with self._transaction("read pending samples", write=False) as conn:
            rows = conn.execute(self.dialect.pending_samples, (source,)).fetchall()
        frame = pd.DataFrame.from_records(rows, columns=list(SAMPLE_META_COLUMNS))
        return _typed_meta(frame)

    def sample_counts(self) -> dict[str, dict[str, int]]:
        """Samples per source and regime: {"live": {regime: n}, "archive": {regime: n}}.

        Every regime is present, with 0 when it has no samples.
        """
        counts: dict[str, dict[str, int]] = {s: dict.fromkeys(REGIMES, 0) for s in SOURCES}
        with self._transaction("count samples", write=False) as conn:
            rows = conn.execute(
                "SELECT source, regime, count(*) FROM samples GROUP BY source, regime"
            ).fetchall()
        for source, regime, n in rows:
            counts[source][regime] = int(n)
        return counts

    def read_samples(
        self,
        source: Source | None = None,
        labelled: bool | None = True,
        feature_version: int | None = None,
        target: str | None = None,
    ) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
        """Samples as (meta, X): meta has one row per sample, X the float32 feature matrix.

        `source` None reads both sources; `labelled` True reads labelled samples, False the
        pending ones, None both; `feature_version` restricts to one feature layout (required
        when the selection mixes layouts, which raises StoreError); `target` (a
        `LabelConfig.key`) reads only the samples that target labelled. Rows come in (source,
        symbol, ts) order, archive before live. meta columns: symbol, source, regime and event
        are categorical, ts datetime64[ns], weight float64, label int8 (nullable Int8 unless
        `labelled` is True). X is writable.
        """
        sources = KEY_ORDER if source is None else (source,)
        if source is not None:
            check_source("read_samples", source)
        with self._transaction("read samples", write=False) as conn:
            known = dict(conn.execute("SELECT version, n_features FROM feature_sets").fetchall())
            check_versions = feature_version is None and len(known) > 1
            weights = _constant_weights(conn, sources)
            groups = []
            for src in sources:
                sql, params = _samples_query(
                    self.dialect,
                    src,
                    labelled,
                    feature_version,
                    check_versions,
                    weights is None,
                    target,
                )
                groups.extend(conn.execute(sql, params).fetchall())
        if check_versions:
            versions = sorted({g[3] for g in groups} | {g[4] for g in groups})
            if len(versions) > 1:
                raise StoreError(
                    f"{self.path}: the selected samples mix feature versions {versions}; pass "
                    "feature_version= to read one layout"
                )
        else:
            versions = [feature_version] if feature_version is not None else list(known)
        n_features = int(known.get(versions[0], 0)) if versions else 0
        return _decode_groups(self.path, groups, n_features, labelled is True, weights)


def _typed_meta(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a sample meta frame built from plain rows the dtypes `read_samples` returns."""
    frame["ts"] = pd.to_datetime(frame["ts"], format="%Y-%m-%d").astype("datetime64[ns]")
    frame["symbol"] = frame["symbol"].astype("category")
    frame["source"] = pd.Categorical(frame["source"], categories=list(SOURCES))
    frame["regime"] = pd.Categorical(frame["regime"], categories=list(REGIMES))
    frame["weight"] = frame["weight"].astype("float64")
    frame["label"] = frame["label"].astype("Int8")
    frame["event"] = frame["event"].astype("category")
    return frame


def _constant_weights(
    conn: SqlConnection, sources: tuple[Source, ...]
) -> dict[tuple[str, str], float] | None:
    """The weight of each (source, regime) when all its samples share one, else None.

    Regime loss weights normally are such constants, and then `read_samples` need not move a
    million floats through SQL text. Two index seeks per pair (min and max on the covering
    index samples_by_regime), so the check costs milliseconds.
    """
    table: dict[tuple[str, str], float] = {}
    for source in sources:
        for regime in REGIMES:
            key = (source, regime)
            low = conn.execute(
                "SELECT min(weight) FROM samples WHERE source = ? AND regime = ?", key
            ).fetchone()[0]
            high = conn.execute(
                "SELECT max(weight) FROM samples WHERE source = ? AND regime = ?", key
            ).fetchone()[0]
            if low != high:
                return None
            if low is not None:
                table[key] = float(low)
    return table


def _samples_query(
    dialect: Dialect,
    source: Source,
    labelled: bool | None,
    feature_version: int | None,
    check_versions: bool,
    read_weights: bool,
    target: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The aggregate query of `read_samples` for one source: a row per symbol.

    Each column is concatenated inside SQLite, so a million samples cost a thousand Python
    rows, not a million (docs/benchmarks.md). All the aggregates of a group see its rows in
    the same order, so the columns stay aligned.
    """
    where = ["source = :source"]
    params: dict[str, Any] = {"source": source, "sep": _FIELD_SEP}
    if labelled is not None:
        where.append("label IS NOT NULL" if labelled else "label IS NULL")
    if feature_version is not None:
        where.append("feature_version = :version")
        params["version"] = feature_version
    if target is not None:
        where.append("target = :target")
        params["target"] = target
    versions = "min(feature_version), max(feature_version)" if check_versions else "NULL, NULL"
    concat = dialect.concat.format
    weights = concat(expr=dialect.weight_text, sep="','") if read_weights else "NULL"
    # Live samples have no event (a CHECK constraint), so their query skips the column.
    events = concat(expr="coalesce(event, '')", sep=":sep") if source == "archive" else "NULL"
    sql = f"""
        SELECT source, symbol, count(*), {versions},
            {dialect.concat_features}, {concat(expr="ts", sep="''")},
            {concat(expr=_REGIME_CODE, sep="''")}, {concat(expr=dialect.label_char, sep="''")},
            {weights}, {events}
        FROM samples WHERE {" AND ".join(where)}
        GROUP BY {dialect.samples_group_by} ORDER BY symbol
    """  # noqa: S608 (fixed fragments; every value is a bound parameter)
    return sql, params


def _decode_groups(
    path: str,
    groups: list[tuple[Any, ...]],
    n_features: int,
    labelled_only: bool,
    weight_table: Mapping[tuple[str, str], float] | None,
) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
    """Turn the per-(source, symbol) aggregates of `read_samples` into (meta, X)."""
    counts = np.array([g[2] for g in groups], dtype=np.int64)
    total = int(counts.sum())
    blob = bytearray().join(g[5] for g in groups)
    ts_text = "".join(g[6] for g in groups).encode("ascii")
    regime_codes = np.frombuffer("".join(g[7] for g in groups).encode("ascii"), dtype=np.uint8)
    label_chars = np.frombuffer("".join(g[8] for g in groups).encode("ascii"), dtype=np.uint8)
    if (
        len(blob) != total * n_features * 4
        or len(ts_text) != total * 10
        or len(regime_codes) != total
        or len(label_chars) != total
    ):
        raise StoreError(
            f"{path}: samples do not decode: {total} rows, {len(blob)} feature bytes for "
            f"{n_features} float32 features each; run PRAGMA integrity_check"
        )
    matrix = np.frombuffer(blob, dtype=np.float32).reshape(total, n_features)
    regime_codes = (regime_codes - ord("0")).astype(np.int8)
    if total and regime_codes.max() >= len(REGIMES):
        raise StoreError(f"{path}: a sample has a regime outside {', '.join(REGIMES)}")
    source_codes = np.repeat(np.array([SOURCES.index(g[0]) for g in groups], dtype=np.int8), counts)

    if weight_table is None:
        text = ",".join(g[9] for g in groups)
        weights = np.array(text.split(","), dtype=np.float64) if total else np.empty(0)
    else:
        lookup = np.full((len(SOURCES), len(REGIMES)), np.nan)
        for (source, regime), weight in weight_table.items():
            lookup[SOURCES.index(source), REGIMES.index(regime)] = weight
        weights = lookup[source_codes, regime_codes]

    missing = label_chars == ord("-")
    label_values = np.where(missing, 0, label_chars.astype(np.int16) - ord("0")).astype(np.int8)
    labels: Any = label_values if labelled_only else pd.arrays.IntegerArray(label_values, missing)

    symbols = sorted({g[1] for g in groups})
    symbol_code = {s: i for i, s in enumerate(symbols)}
    symbol_codes = np.repeat(np.array([symbol_code[g[1]] for g in groups], dtype=np.int32), counts)

    event_codes = np.full(total, -1, dtype=np.int32)
    event_names: list[str] = []
    archive_text = [g[10] for g in groups if g[0] == "archive"]
    if archive_text:
        codes, uniques = pd.factorize(
            np.array(_FIELD_SEP.join(archive_text).split(_FIELD_SEP), dtype=object)
        )
        names = list(uniques)
        if "" in names:  # a NULL event: make it missing, not a category
            blank = names.index("")
            codes = np.where(codes == blank, -1, codes - (codes > blank))
            names.remove("")
        event_codes[source_codes == SOURCES.index("archive")] = codes
        event_names = names

    meta = pd.DataFrame(
        {
            "symbol": pd.Categorical.from_codes(symbol_codes, categories=pd.Index(symbols)),
            "ts": np.frombuffer(ts_text, dtype="S10")
            .astype("datetime64[D]")
            .astype("datetime64[ns]"),
            "source": pd.Categorical.from_codes(source_codes, categories=pd.Index(SOURCES)),
            "regime": pd.Categorical.from_codes(regime_codes, categories=pd.Index(REGIMES)),
            "weight": weights,
            "label": labels,
            "event": pd.Categorical.from_codes(event_codes, categories=pd.Index(event_names)),
        }
    )
    return meta, matrix
