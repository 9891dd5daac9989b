"""What the parts of `Store` share: the connection, its SQL dialect and a transaction under
its lock.

`Store` (daemon.store.sqlite) is one class built from one mixin per idea: the connection and its
checks (sqlite.py), the batch write (batch.py), the reads of bars, offsets and counters
(reads.py) and the reads of samples (samples.py). Each mixin subclasses `Connected`, which
names what they use and `Store` (or `PostgresStore`, daemon.store.postgres) provides. The
mixins hold the logic once; the SQL that differs between the two engines comes from
`Connected.dialect` (daemon.store.dialect), and both connections take the same `?`, `?N` and
`:name` placeholders (the PostgreSQL one translates them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from daemon.store.dialect import Dialect


class SqlCursor(Protocol):
    """What the store reads from an executed statement (sqlite3's cursor, psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...

    def close(self) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """The connection a store transaction yields: sqlite3's, or the PostgreSQL adapter."""

    def execute(self, sql: str, parameters: Any = ..., /) -> SqlCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> SqlCursor: ...


@runtime_checkable
class StagingConnection(SqlConnection, Protocol):
    """A connection that loads rows in bulk into a staging table (PostgreSQL's COPY)."""

    def stage(self, table: str, rows: Sequence[Sequence[Any]]) -> None: ...


@runtime_checkable
class StreamingConnection(SqlConnection, Protocol):
    """A connection that can leave a statement's rows on the server until they are fetched
    (PostgreSQL's server-side cursor): its `execute` receives every row at once."""

    def stream(self, sql: str, parameters: Any = ..., /) -> SqlCursor: ...


def streamed(conn: SqlConnection, sql: str, parameters: Any) -> SqlCursor:
    """A cursor over `sql` whose rows are produced as `fetchmany` asks for them: a server-side
    cursor on PostgreSQL; sqlite3's cursor steps through its statement that way already."""
    if isinstance(conn, StreamingConnection):
        return conn.stream(sql, parameters)
    return conn.execute(sql, parameters)


class Connected:
    """The attributes and the transaction that `Store` gives its mixins."""

    path: str
    dialect: Dialect
    _checkpointer: threading.Thread | None
    _checkpoint_due: threading.Event

    def _transaction(self, what: str, *, write: bool) -> AbstractContextManager[SqlConnection]:
        """One transaction under the store lock (`Store._transaction`)."""
        raise NotImplementedError

    def _schema_version(self) -> int:
        """The recorded schema version, inside a transaction of `_transaction`."""
        raise NotImplementedError
