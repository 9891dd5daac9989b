"""Copying a store's rows from one engine to another, verified by counts and hashes.

`regimed store migrate --from SQLITE_PATH --to URL` moves a single-host SQLite store into an
empty PostgreSQL database (daemon.cli.stores). Every table of the schema is read in its key
order from the source and loaded into the target with COPY, in one target transaction; before
it commits, each table's row count and a sha256 over its rows (in the same key order, every
value in one canonical text form: floats as their exact hex form, bytes as hex) is computed on
both sides, and any difference rolls the whole copy back. Key columns sort byte for byte on
both engines (SQLite's BINARY collation; the "C" collation of the PostgreSQL schema), so equal
tables hash equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemon.errors import StoreError
from daemon.store.connected import SqlConnection
from daemon.store.postgres import PgConnection, PostgresStore
from daemon.store.sqlite import Store

__all__ = ["TABLES", "TableCheck", "Transferred", "copy_store", "table_digest"]


@dataclass(frozen=True)
class Table:
    """One table of the schema: its columns in order and the key that orders its rows."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    #: The column a PostgreSQL sequence fills (set past the copied ids afterwards).
    serial: str | None = None
    #: Rows the schema itself writes (defaults): replaced by the source's, not a sign that the
    #: database was written to.
    seeded: bool = False


#: Every table of the schema, parents before the tables that reference them.
TABLES: tuple[Table, ...] = (
    Table("feature_sets", ("version", "n_features"), ("version",)),
    Table(
        "bars",
        ("symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix", "vix_source"),
        ("symbol", "ts"),
    ),
    Table(
        "samples",
        (
            "source",
            "symbol",
            "ts",
            "regime",
            "weight",
            "label",
            "event",
            "feature_version",
            "features",
            "target",
        ),
        ("source", "symbol", "ts"),
    ),
    Table("label_targets", ("source", "target"), ("source",), seeded=True),
    Table("kafka_offsets", ("topic", "partition", "next_offset"), ("topic", "partition")),
    Table("counters", ("name", "value"), ("name",)),
    Table("models", ("version", "trained_at", "sha256", "path", "status", "report"), ("version",)),
    Table(
        "retrain_runs",
        ("id", "version", "trigger", "started_at", "finished_at", "promoted", "reason", "report"),
        ("id",),
        serial="id",
    ),
    Table(
        "predictions",
        ("symbol", "ts", "model_version", "proba", "prediction", "regime", "label"),
        ("symbol", "ts", "model_version"),
    ),
    Table(
        "promotions",
        ("id", "version", "promoted_at", "previous_version", "reason"),
        ("id",),
        serial="id",
    ),
    Table(
        "dead_letters",
        (
            "source_topic",
            "source_partition",
            "source_offset",
            "reason",
            "key",
            "value",
            "headers",
            "parked_at",
        ),
        ("source_topic", "source_partition", "source_offset"),
    ),
    Table("outbox", ("id", "topic", "key", "value"), ("id",), serial="id"),
)


@dataclass(frozen=True)
class TableCheck:
    """A table's row count and the sha256 of its rows, on the source and the target."""

    table: str
    source_rows: int
    target_rows: int
    source_sha256: str
    target_sha256: str

    @property
    def equal(self) -> bool:
        return (self.source_rows, self.source_sha256) == (self.target_rows, self.target_sha256)


@dataclass(frozen=True)
class Transferred:
    """What `copy_store` copied and checked, table by table."""

    checks: tuple[TableCheck, ...]


def _canonical(value: Any) -> bytes:
    """One value as text that differs exactly when the values differ (type included)."""
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"i1" if value else b"i0"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, float):
        return b"f" + value.hex().encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return b"b" + bytes(value).hex().encode()
    return b"s" + str(value).encode("utf-8")


def _select(table: Table) -> str:
    order = ", ".join(table.key)
    return f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {order}"  # noqa: S608


def table_digest(conn: SqlConnection, table: Table) -> tuple[int, str]:
    """(rows, sha256) of one table, read in key order on an open transaction."""
    digest = hashlib.sha256()
    rows = 0
    for row in conn.execute(_select(table)):
        digest.update(b"\x1e".join(_canonical(v) for v in row) + b"\n")
        rows += 1
    return rows, digest.hexdigest()


def copy_store(
    source: Store,
    target: PostgresStore,
    *,
    extra: Callable[[SqlConnection], Iterable[TableCheck]] | None = None,
) -> Transferred:
    """Copy every row of `source` into `target` (which must hold no rows) in one transaction
    of `target`, check every table by count and sha256, and commit only when all are equal;
    StoreError naming the tables that differ otherwise. `extra` runs in the same transaction
    after the tables (the registry's artifacts) and returns checks of its own."""
    checks: list[TableCheck] = []
    with (
        source.transaction("read the store to copy", write=False) as src,
        target.transaction("copy a store into this database", write=True) as dst,
    ):
        assert isinstance(dst, PgConnection)
        for table in TABLES:
            if table.seeded:
                continue
            (count,) = dst.execute(f"SELECT count(*) FROM {table.name}").fetchone()  # noqa: S608
            if count:
                raise StoreError(
                    f"{target.where}: table {table.name} already holds {count} rows; migrate "
                    "into a database that regimed has not written to yet"
                )
        for table in TABLES:
            if table.seeded:
                dst.execute(f"DELETE FROM {table.name}")  # noqa: S608
            dst.copy_in(table.name, table.columns, src.execute(_select(table)))
            if table.serial is not None:
                serial, name = table.serial, table.name
                dst.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', '{serial}'), "  # noqa: S608
                    f"coalesce(max({serial}), 0) + 1, false) FROM {name}"
                )
        for table in TABLES:
            source_rows, source_sha = table_digest(src, table)
            target_rows, target_sha = table_digest(dst, table)
            checks.append(TableCheck(table.name, source_rows, target_rows, source_sha, target_sha))
        if extra is not None:
            checks.extend(extra(dst))
        differ = [c.table for c in checks if not c.equal]
        if differ:
            raise StoreError(
                f"{target.where}: the copy differs from {source.path} in {', '.join(differ)}; "
                "nothing was committed"
            )
    return Transferred(tuple(checks))
