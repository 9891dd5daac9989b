"""The PostgreSQL store: the same `Store`, in one database that every daemon of a group shares.

`PostgresStore` is `Store` with another connection: the mixins (batch.py, reads.py,
samples.py) and the registry run unchanged, with the statements that PostgreSQL spells
differently taken from `POSTGRES` (daemon.store.dialect). A consumer batch is one PostgreSQL
transaction holding its bars, samples, labels, predictions, outbox records and Kafka offsets, as
on SQLite, so a batch is stored exactly once whichever host writes it. Bars and samples reach
the server with COPY into per-session staging tables and are upserted from there in two
statements.

The store's callers write `?`, `?N` and `:name` placeholders (SQLite's); `PgConnection`
translates each statement once into psycopg's `%s` / `%(name)s` form. The connection runs in
autocommit mode and every store transaction is an explicit `Connection.transaction()`, under
the same lock that serialises the threads of one process.

`path` stays the local file named by `store.path`: the anchor of what still lives on this
host's disk (the lock files and, for now, the model artifacts); `where` names the database (its
URL without the password) in messages.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.config import StoreConfig
from daemon.errors import RegimedError, StoreError
from daemon.store.connected import SqlCursor
from daemon.store.dialect import POSTGRES, Dialect
from daemon.store.migrations import LATEST_VERSION
from daemon.store.postgres_schema import migrate_postgres, postgres_version
from daemon.store.sqlite import Store

logger = logging.getLogger(__name__)

__all__ = ["PgConnection", "PostgresStore", "advisory_lock", "translate", "where_of"]

#: Tables whose batch rows are staged with COPY (`PgConnection.stage`), with their columns.
STAGED = {
    "bars": ("symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix",
             "vix_source"),
    "samples": ("source", "symbol", "ts", "regime", "weight", "label", "event",
                "feature_version", "features"),
}  # fmt: skip
#: How often a waiting `advisory_lock` tries again.
LOCK_RETRY_S = 0.2
#: Seconds to wait for the server when connecting (libpq's connect_timeout, unless the URL
#: sets one).
CONNECT_TIMEOUT_S = 10

_TOKEN = re.compile(r"'(?:[^']|'')*'|\?(\d*)|(?<!:):([A-Za-z_]\w*)|%")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, tuple[str, ...] | None]:
    """A statement with `?`, `?N` or `:name` placeholders in psycopg's form, and how to bind
    its parameters: None for positional (`?`), else the parameter names in use (`?N` becomes
    `%(pN)s`). String literals are left as they are; `%` is doubled.

    >>> translate("SELECT a FROM t WHERE b = ?1 AND c = ?1 AND d LIKE '%?'")
    ("SELECT a FROM t WHERE b = %(p1)s AND c = %(p1)s AND d LIKE '%%?'", ('p1',))
    """
    names: list[str] = []

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text.replace("%", "%%")
        if text == "%":
            return "%%"
        if text.startswith("?"):
            if not match.group(1):
                return "%s"
            name = f"p{match.group(1)}"
        else:
            name = match.group(2)
        names.append(name)
        return f"%({name})s"

    return _TOKEN.sub(token, sql), (tuple(dict.fromkeys(names)) if names else None)


def _bind(names: tuple[str, ...] | None, parameters: Any) -> Any:
    """Statement parameters in the form `translate` asked for."""
    if names is None or isinstance(parameters, dict):
        return parameters
    return {name: parameters[int(name[1:]) - 1] for name in names}


class PgConnection:
    """A psycopg connection that takes the store's SQLite-style statements."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn
        self._cursors = 0  # server-side cursors opened, for their names

    def execute(self, sql: str, parameters: Any = (), /) -> SqlCursor:
        text, names = translate(sql)
        cursor = self.conn.cursor()
        cursor.execute(text, _bind(names, parameters) if parameters else None)
        return cursor

    def stream(self, sql: str, parameters: Any = (), /) -> SqlCursor:
        """Run `sql` as a server-side cursor (binary results): the server keeps its rows until
        `fetchmany` asks for them. Only inside a transaction, which closes it at the latest."""
        text, names = translate(sql)
        self._cursors += 1
        cursor = self.conn.cursor(name=f"regimed_stream_{self._cursors}", binary=True)
        cursor.execute(text, _bind(names, parameters) if parameters else None)
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> SqlCursor:
        """Run `sql` once per parameter row; the cursor's rowcount is the total."""
        text, names = translate(sql)
        rows = [_bind(names, p) for p in parameters]
        cursor = self.conn.cursor()
        if rows:
            cursor.executemany(text, rows)
        return _Total(cursor, cursor.rowcount if rows else 0)

    def copy_in(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Load `rows` into `table` (its `columns`, in order) with COPY; how many."""
        count = 0
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.conn.cursor().copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    def stage(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Load `rows` (in the order of `STAGED[table]`) into `stage_<table>` with COPY; the
        staging tables empty themselves at every commit."""
        self.conn.execute(f"DELETE FROM stage_{table}")  # noqa: S608
        self.copy_in(f"stage_{table}", STAGED[table], rows)


class _Total:
    """An executemany cursor whose rowcount is the sum over its rows."""

    def __init__(self, cursor: psycopg.Cursor[Any], rowcount: int) -> None:
        self._cursor = cursor
        self.rowcount = max(rowcount, 0)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def fetchmany(self, size: int) -> list[Any]:
        return self._cursor.fetchmany(size)

    def close(self) -> None:
        self._cursor.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


def where_of(url: str) -> str:
    """The URL of a database as messages show it: any password replaced by ***."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable store.url)"
    user = params.get("user") or ""
    host = params.get("host") or ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{'@' if user else ''}{host}{port}/{params.get('dbname') or ''}"


class PostgresStore(Store):
    """The store in a PostgreSQL database (`store.url`), shared by every daemon of a group."""

    dialect: Dialect = POSTGRES
    shared: bool = True

    def __init__(
        self,
        url: str,
        *,
        path: str = "regimed.db",
        password: str = "",
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.where = where_of(url)
        self.path = path
        self.read_only = read_only
        self.quick_check_seconds = 0.0
        self.busy_timeout_ms = 0
        self._lock = threading.RLock()
        self._closed = False
        self._checkpointer = None
        self._checkpoint_due = threading.Event()
        self._checkpoint_stop = False
        self._pg = _connect(url, password, "regimed")
        try:
            self._prepare_postgres()
        except BaseException as exc:
            self._closed = True
            self._pg.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"{self.where}: cannot open the store: {_reason(exc)}") from None
            raise

    @classmethod
    def connect(cls, config: StoreConfig, *, read_only: bool = False) -> PostgresStore:
        """Open the PostgreSQL store of `config` (`store.url`, `store.password`)."""
        return cls(
            config.url,
            path=config.path,
            password=config.password.get_secret_value(),
            read_only=read_only,
        )

    def _prepare_postgres(self) -> None:
        if self.read_only:
            version = postgres_version(self._pg, self.where)
            if version != LATEST_VERSION:
                raise StoreError(
                    f"{self.where}: schema version {version}, expected {LATEST_VERSION}; open "
                    "it once without read_only (e.g. start the daemon) to migrate it"
                )
            self._pg.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            return
        migrate_postgres(self._pg, self.where)
        for table in STAGED:
            self._pg.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} (LIKE {table}) "
                "ON COMMIT DELETE ROWS"
            )

    def _schema_version(self) -> int:
        return postgres_version(self._pg, self.where)

    def __enter__(self) -> PostgresStore:
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"<PostgresStore {self.where} {state}>"

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pg.close()

    def checkpoint_in_background(self) -> None:
        """Nothing to do: the server checkpoints on its own."""

    @contextmanager
    def _transaction(self, what: str, *, write: bool) -> Iterator[PgConnection]:  # type: ignore[override]
        """One transaction under the store lock; any exception rolls it back, and psycopg
        errors become StoreError naming the database.

        A read sees one snapshot for all its statements (REPEATABLE READ), as an SQLite read
        transaction does: other daemons commit batches meanwhile, and a read of several
        statements (`read_samples`: feature sets, weights, then rows) must not mix two states.
        Writes run at READ COMMITTED: their upserts and keys decide conflicts."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.where}: the store is closed; cannot {what}")
            if write and self.read_only:
                raise StoreError(f"{self.where}: opened read-only; cannot {what}")
            try:
                with self._pg.transaction():
                    if not write:
                        self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield PgConnection(self._pg)
            except psycopg.Error as exc:
                raise StoreError(f"{self.where}: cannot {what}: {_reason(exc)}") from exc


def _connect(url: str, password: str, application: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to the database of `url`; StoreError naming it (without the
    password) when it cannot be made."""
    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    params.setdefault("application_name", application)
    if password:
        params["password"] = password
    try:
        return psycopg.connect(make_conninfo("", **params), autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"{where_of(url)}: cannot open the store: {_reason(exc)}") from None


@contextmanager
def advisory_lock(
    config: StoreConfig,
    key: int,
    busy: Callable[[str], RegimedError],
    timeout_s: float = 0.0,
) -> Iterator[None]:
    """Hold PostgreSQL's session-level advisory lock `key` on the database of `config` for the
    block, on a connection of its own: the lock lives exactly as long as that session, so a
    holder that dies (SIGKILL, a lost host) releases it when the server drops its connection.
    When another session holds it for longer than `timeout_s` seconds, raise `busy(holder)`,
    holder naming that session (its application name, which says pid and host, and address).
    """
    me = f"regimed pid {os.getpid()} on {socket.gethostname()}"
    conn = _connect(config.url, config.password.get_secret_value(), me[:63])
    try:
        deadline = time.monotonic() + timeout_s
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() >= deadline:
                raise busy(_lock_holder(conn, key))
            time.sleep(min(LOCK_RETRY_S, max(deadline - time.monotonic(), 0.01)))
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def _lock_holder(conn: psycopg.Connection[tuple[Any, ...]], key: int) -> str:
    """Who holds advisory lock `key` (a bigint key is classid:objid, its high and low words)."""
    row = conn.execute(
        "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks AS l "
        "JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return "unknown"
    name, address, pid = row
    return f"{name or 'a session'} (server pid {pid}{f', from {address}' if address else ''})"


def _reason(exc: psycopg.Error) -> str:
    """The first line of a server or libpq error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
