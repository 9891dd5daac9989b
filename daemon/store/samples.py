"""The store's reads of samples: pending ones, counts per source and regime, and the
training read `Store.read_samples` (a row per symbol aggregated inside the database, fetched a
chunk at a time and decoded with numpy into arrays allocated once)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.domain import REGIMES, SOURCES, Source, check_source
from daemon.errors import StoreError
from daemon.store.connected import Connected, SqlConnection, streamed
from daemon.store.dialect import Dialect

__all__ = ["KEY_ORDER", "READ_CHUNK_ROWS", "SAMPLE_META_COLUMNS", "SampleReads"]

KEY_ORDER: tuple[Source, ...] = ("archive", "live")  # the order of the samples primary key
SAMPLE_META_COLUMNS = ("symbol", "ts", "source", "regime", "weight", "label", "event")
#: About how many samples `read_samples` fetches and decodes at a time (whole symbols): with
#: 50 features, 13 MiB of feature bytes.
READ_CHUNK_ROWS = 65_536
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
        *,
        chunk_rows: int = READ_CHUNK_ROWS,
    ) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
        """Samples as (meta, X): meta has one row per sample, X the float32 feature matrix.

        `source` None reads both sources; `labelled` True reads labelled samples, False the
        pending ones, None both; `feature_version` restricts to one feature layout (required
        when the selection mixes layouts, which raises StoreError); `target` (a
        `LabelConfig.key`) reads only the samples that target labelled. Rows come in (source,
        symbol, ts) order, archive before live. meta columns: symbol, source, regime and event
        are categorical, ts datetime64[ns], weight float64, label int8 (nullable Int8 unless
        `labelled` is True). X is writable.

        Memory: a first query counts the samples of each symbol, X and the meta columns are
        allocated once at their final size, and the samples are then fetched and decoded
        about `chunk_rows` at a time (whole symbols; on PostgreSQL from a server-side cursor),
        so the read needs the result plus one chunk, not the raw rows beside it
        (docs/benchmarks.md, "Memory of the training read").
        """
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise StoreError(f"read_samples(chunk_rows={chunk_rows!r}): expected an integer >= 1")
        sources = KEY_ORDER if source is None else (source,)
        if source is not None:
            check_source("read_samples", source)
        with self._transaction("read samples", write=False) as conn:
            known = dict(conn.execute("SELECT version, n_features FROM feature_sets").fetchall())
            check_versions = feature_version is None and len(known) > 1
            weights = _constant_weights(conn, sources)
            selections = [_where(src, labelled, feature_version, target) for src in sources]
            groups: list[_Group] = []
            found: set[int] = set()
            for src, (where, params) in zip(sources, selections, strict=True):
                for symbol, n, low, high in conn.execute(
                    _groups_query(where, check_versions), params
                ).fetchall():
                    groups.append(_Group(src, symbol, int(n)))
                    found.update(v for v in (low, high) if v is not None)
            if check_versions:
                versions = sorted(found)
                if len(versions) > 1:
                    raise StoreError(
                        f"{self.path}: the selected samples mix feature versions {versions}; "
                        "pass feature_version= to read one layout"
                    )
            else:
                versions = [feature_version] if feature_version is not None else list(known)
            n_features = int(known.get(versions[0], 0)) if versions else 0
            columns = _Columns(self.path, groups, n_features)
            for src, (where, params) in zip(sources, selections, strict=True):
                sql = _samples_query(self.dialect, src, where, weights is None)
                counts = [g.count for g in groups if g.source == src]
                cursor = streamed(conn, sql, params)
                try:
                    for size in _chunk_sizes(counts, chunk_rows):
                        columns.fill(cursor.fetchmany(size))
                finally:
                    cursor.close()
        return columns.result(labelled is True, weights)


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


def _where(
    source: Source, labelled: bool | None, feature_version: int | None, target: str | None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause and parameters of `read_samples` for one source."""
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
    return " AND ".join(where), params


def _groups_query(where: str, check_versions: bool) -> str:
    """The samples of each symbol that `read_samples` will read (and their feature versions
    when they may differ): what sizes its arrays before any feature is fetched."""
    versions = "min(feature_version), max(feature_version)" if check_versions else "NULL, NULL"
    return f"""
        SELECT symbol, count(*), {versions} FROM samples WHERE {where}
        GROUP BY symbol ORDER BY symbol
    """  # noqa: S608 (fixed fragments; every value is a bound parameter)


def _samples_query(dialect: Dialect, source: Source, where: str, read_weights: bool) -> str:
    """The aggregate query of `read_samples` for one source: a row per symbol.

    Each column is concatenated inside the database, so a million samples cost a thousand
    Python rows, not a million (docs/benchmarks.md). All the aggregates of a group see its
    rows in the same order, so the columns stay aligned.
    """
    concat = dialect.concat.format
    weights = concat(expr=dialect.weight_text, sep="','") if read_weights else "NULL"
    # Live samples have no event (a CHECK constraint), so their query skips the column.
    events = concat(expr="coalesce(event, '')", sep=":sep") if source == "archive" else "NULL"
    return f"""
        SELECT symbol, count(*), {dialect.concat_features}, {concat(expr="ts", sep="''")},
            {concat(expr=_REGIME_CODE, sep="''")}, {concat(expr=dialect.label_char, sep="''")},
            {weights}, {events}
        FROM samples WHERE {where}
        GROUP BY {dialect.samples_group_by} ORDER BY symbol
    """  # noqa: S608 (fixed fragments; every value is a bound parameter)


def _chunk_sizes(counts: list[int], chunk_rows: int) -> list[int]:
    """How many consecutive groups (of `counts` samples each) each fetch takes: as many as
    stay within `chunk_rows` samples, and at least one."""
    sizes: list[int] = []
    groups = rows = 0
    for n in counts:
        if groups and rows + n > chunk_rows:
            sizes.append(groups)
            groups = rows = 0
        groups += 1
        rows += n
    if groups:
        sizes.append(groups)
    return sizes


@dataclass(frozen=True)
class _Group:
    """The samples of one symbol of one source that `read_samples` reads."""

    source: Source
    symbol: str
    count: int


class _Columns:
    """The arrays of `read_samples`, allocated at their final size and filled a chunk of
    per-symbol aggregates at a time (`fill`), in the order of `groups`."""

    def __init__(self, path: str, groups: list[_Group], n_features: int) -> None:
        self.path = path
        self.groups = groups
        self.n_features = n_features
        counts = np.array([g.count for g in groups], dtype=np.int64)
        total = int(counts.sum())
        self.X = np.empty((total, n_features), dtype=np.float32)
        self.ts = np.empty(total, dtype="datetime64[ns]")
        self.regime = np.empty(total, dtype=np.int8)
        self.label = np.empty(total, dtype=np.int8)
        self.missing = np.empty(total, dtype=bool)
        self.weight = np.empty(total, dtype=np.float64)
        self.event = np.full(total, -1, dtype=np.int32)
        #: event name -> category code, in order of first appearance
        self.events: dict[str, int] = {}
        sources = np.array([SOURCES.index(g.source) for g in groups], dtype=np.int8)
        self.source = np.repeat(sources, counts)
        self.symbols = sorted({g.symbol for g in groups})
        code = {s: i for i, s in enumerate(self.symbols)}
        self.symbol = np.repeat(np.array([code[g.symbol] for g in groups], np.int32), counts)
        self.next_group = 0
        self.offset = 0

    def fill(self, rows: list[tuple[Any, ...]]) -> None:
        """Decode the aggregates of the next `len(rows)` groups into their slices."""
        start = self.offset
        for symbol, n, blob, *_ in rows:
            group = self.groups[self.next_group] if self.next_group < len(self.groups) else None
            if group is None or (group.symbol, group.count) != (symbol, n):
                raise StoreError(f"{self.path}: the samples changed while they were read")
            if len(blob) != n * self.n_features * 4:
                raise StoreError(
                    f"{self.path}: samples do not decode: {n} rows of {symbol}, {len(blob)} "
                    f"feature bytes for {self.n_features} float32 features each; check the "
                    "store's integrity (PRAGMA integrity_check on SQLite)"
                )
            stop = self.offset + n
            self.X[self.offset : stop] = np.frombuffer(blob, dtype=np.float32).reshape(n, -1)
            self.offset, self.next_group = stop, self.next_group + 1
        end = self.offset
        if end == start:
            return
        ts_text = "".join(r[3] for r in rows).encode("ascii")
        regimes = np.frombuffer("".join(r[4] for r in rows).encode("ascii"), dtype=np.uint8)
        labels = np.frombuffer("".join(r[5] for r in rows).encode("ascii"), dtype=np.uint8)
        if len(ts_text) != (end - start) * 10 or not len(regimes) == len(labels) == end - start:
            raise StoreError(f"{self.path}: samples do not decode: the text columns of "
                             f"{end - start} rows have another length")  # fmt: skip
        self.ts[start:end] = np.frombuffer(ts_text, dtype="S10").astype("datetime64[D]")
        if regimes.max() - ord("0") >= len(REGIMES):
            raise StoreError(f"{self.path}: a sample has a regime outside {', '.join(REGIMES)}")
        self.regime[start:end] = regimes - ord("0")
        missing = labels == ord("-")
        self.missing[start:end] = missing
        self.label[start:end] = np.where(missing, 0, labels.astype(np.int16) - ord("0"))
        if rows[0][6] is not None:  # every weight as text
            self.weight[start:end] = ",".join(r[6] for r in rows).split(",")
        if rows[0][7] is not None:  # archive: the event names
            self._events(_FIELD_SEP.join(r[7] for r in rows).split(_FIELD_SEP), start, end)

    def _events(self, names: list[str], start: int, end: int) -> None:
        codes, uniques = pd.factorize(np.array(names, dtype=object))
        # a NULL event (read as "") is missing, not a category
        known = [-1 if u == "" else self.events.setdefault(u, len(self.events)) for u in uniques]
        self.event[start:end] = np.array(known, dtype=np.int32)[codes]

    def result(
        self, labelled_only: bool, weight_table: Mapping[tuple[str, str], float] | None
    ) -> tuple[pd.DataFrame, npt.NDArray[np.float32]]:
        """(meta, X), once every group is filled in."""
        if self.next_group != len(self.groups):
            raise StoreError(f"{self.path}: the samples changed while they were read")
        weights = self.weight
        if weight_table is not None:
            lookup = np.full((len(SOURCES), len(REGIMES)), np.nan)
            for (source, regime), weight in weight_table.items():
                lookup[SOURCES.index(source), REGIMES.index(regime)] = weight
            weights = lookup[self.source, self.regime]
        labels: Any = (
            self.label if labelled_only else pd.arrays.IntegerArray(self.label, self.missing)
        )
        meta = pd.DataFrame(
            {
                "symbol": pd.Categorical.from_codes(self.symbol, categories=pd.Index(self.symbols)),
                "ts": self.ts,
                "source": pd.Categorical.from_codes(self.source, categories=pd.Index(SOURCES)),
                "regime": pd.Categorical.from_codes(self.regime, categories=pd.Index(REGIMES)),
                "weight": weights,
                "label": labels,
                "event": pd.Categorical.from_codes(
                    self.event, categories=pd.Index(list(self.events))
                ),
            },
            copy=False,
        )
        return meta, self.X
