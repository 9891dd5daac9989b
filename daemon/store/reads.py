"""The store's reads of bars, Kafka offsets, dead letters and counters (`Store.bars`,
`Store.last_bars`, `Store.offsets`, ...): what start-up, status and the consumer read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from daemon.domain import REGIMES, VIX_SOURCES, DeadLetterRow, check_day
from daemon.errors import StoreError
from daemon.store.connected import Connected

__all__ = ["BAR_COLUMNS", "Reads"]

BAR_COLUMNS = (
    "symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix", "vix_source",
)  # fmt: skip
# The skip-scan visits each symbol once through the primary key; the correlated subquery finds
# the ts of the n-th latest bar, so only the wanted rows are read.
_LAST_BARS = f"""
WITH RECURSIVE symbols (symbol) AS (
    SELECT (SELECT min(symbol) FROM bars)
    UNION ALL
    SELECT (SELECT min(symbol) FROM bars WHERE symbol > symbols.symbol)
    FROM symbols WHERE symbols.symbol IS NOT NULL
)
SELECT {", ".join(f"b.{c}" for c in BAR_COLUMNS)}
FROM symbols JOIN bars AS b ON b.symbol = symbols.symbol AND b.ts >= coalesce(
    (SELECT ts FROM bars AS x WHERE x.symbol = symbols.symbol ORDER BY ts DESC
     LIMIT 1 OFFSET :skip), '')
ORDER BY b.symbol, b.ts
"""  # noqa: S608 (constant column names)


class Reads(Connected):
    """Reads of bars, offsets, dead letters, counters and the schema version."""

    def schema_version(self) -> int:
        """The recorded schema version (equal to the newest once the store is open)."""
        with self._transaction("read the schema version", write=False):
            return self._schema_version()

    def offsets(self, topic: str) -> dict[int, int]:
        """The stored next offset of every partition of `topic` (empty when none is stored)."""
        with self._transaction("read offsets", write=False) as conn:
            rows = conn.execute(
                "SELECT partition, next_offset FROM kafka_offsets WHERE topic = ?", (topic,)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def dead_letters(self) -> list[DeadLetterRow]:
        """The parked dead letters (`DeadLetterRow`), in source order."""
        with self._transaction("read dead letters", write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM dead_letters ORDER BY source_topic, source_partition, source_offset"
            ).fetchall()
        return [cast(DeadLetterRow, tuple(row)) for row in rows]

    def counter(self, name: str) -> int:
        """The value of one counter (0 when it was never incremented)."""
        with self._transaction("read a counter", write=False) as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def counters(self) -> dict[str, int]:
        """Every counter by name."""
        with self._transaction("read counters", write=False) as conn:
            rows = conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall()
        return {str(n): int(v) for n, v in rows}

    def bar_count(self) -> int:
        """How many bars are stored."""
        with self._transaction("count bars", write=False) as conn:
            return int(conn.execute("SELECT count(*) FROM bars").fetchone()[0])

    def bars(self, symbol: str | None = None, since: str | dt.date | None = None) -> pd.DataFrame:
        """Stored bars (of one symbol, from one day on) in (symbol, ts) order.

        Columns as `BarRow`; `ts` is datetime64[ns], prices are float64, `vix` NaN when unknown.
        """
        where, params = [], []
        if symbol is not None:
            where.append("symbol = ?")
            params.append(symbol)
        if since is not None:
            since_text = since.isoformat() if isinstance(since, dt.date) else since
            check_day("bars(since)", since_text)
            where.append("ts >= ?")
            params.append(since_text)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {', '.join(BAR_COLUMNS)} FROM bars {clause} ORDER BY symbol, ts"  # noqa: S608
        with self._transaction("read bars", write=False) as conn:
            rows = conn.execute(sql, params).fetchall()
        return _bars_frame(rows)

    def recent_bars(self, symbol: str, n: int) -> pd.DataFrame:
        """The latest `n` bars of one symbol, oldest first (what rebuilds its state)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise StoreError(f"recent_bars(n={n!r}): expected an integer >= 1")
        columns = ", ".join(BAR_COLUMNS)
        inner = "SELECT * FROM bars WHERE symbol = ? ORDER BY ts DESC LIMIT ?"
        sql = f"SELECT {columns} FROM ({inner}) AS latest ORDER BY ts"  # noqa: S608 - constant names
        with self._transaction("read recent bars", write=False) as conn:
            rows = conn.execute(sql, (symbol, n)).fetchall()
        return _bars_frame(rows)

    def last_bars(self, n_per_symbol: int) -> pd.DataFrame:
        """The latest `n_per_symbol` bars of every symbol, in (symbol, ts) order.

        This is what start-up needs to rebuild the per-symbol windows without a Kafka replay.
        """
        if isinstance(n_per_symbol, bool) or not isinstance(n_per_symbol, int) or n_per_symbol < 1:
            raise StoreError(f"last_bars(n_per_symbol={n_per_symbol!r}): expected an integer >= 1")
        with self._transaction("read the last bars", write=False) as conn:
            rows = conn.execute(_LAST_BARS, {"skip": n_per_symbol - 1}).fetchall()
        return _bars_frame(rows)


def _bars_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Bars as a DataFrame: category symbol/regime/vix_source, datetime64[ns] ts, floats."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in BAR_COLUMNS]
    data: dict[str, Any] = dict(zip(BAR_COLUMNS, columns, strict=True))
    data["symbol"] = _categorical(data["symbol"])
    data["ts"] = np.array(data["ts"], dtype="datetime64[D]").astype("datetime64[ns]")
    for name in ("open", "high", "low", "close", "volume", "vix"):
        data[name] = np.array(data[name], dtype=np.float64)  # None (no VIX) becomes NaN
    data["regime"] = _categorical(data["regime"], _REGIME_DTYPE)
    data["vix_source"] = _categorical(data["vix_source"], _VIX_SOURCE_DTYPE)
    return pd.DataFrame(data)


_REGIME_DTYPE = pd.CategoricalDtype(list(REGIMES))
_VIX_SOURCE_DTYPE = pd.CategoricalDtype(list(VIX_SOURCES))


def _categorical(values: Sequence[Any], dtype: pd.CategoricalDtype | None = None) -> Any:
    """`pd.Categorical(values)` (categories: the sorted distinct values, or `dtype`'s; other
    values and None are missing), built from codes: a tenth of the time for a symbol's few
    hundred bars, which start-up reads for every symbol."""
    if dtype is None:
        dtype = pd.CategoricalDtype(sorted({v for v in values if v is not None}))
    code = {c: i for i, c in enumerate(dtype.categories)}
    codes = np.fromiter((code.get(v, -1) for v in values), dtype=np.int32, count=len(values))
    return pd.Categorical.from_codes(codes, dtype=dtype)
