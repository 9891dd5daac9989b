"""The PostgreSQL twin of every schema migration, and the code that applies them.

A PostgreSQL store records the same migrations as an SQLite one (version and name from
`daemon.store.migrations.MIGRATIONS`, in `schema_migrations`), so both engines are at "version
N" with the same meaning; only the statements differ. `POSTGRES_STEPS` maps each migration's
name to its PostgreSQL statements. A new migration appended to `MIGRATIONS` gets its twin here
under the same name (an empty tuple when the change means nothing on PostgreSQL, such as a
rebuild for an SQLite planner); a migration without a twin stops `migrate_postgres` with an
error naming it, before anything is written.

Types are chosen to hold what SQLite holds: DOUBLE PRECISION for SQLite's REAL (8 bytes),
BIGINT for integers that can pass 2^31 (offsets, counters, ids), BYTEA for BLOBs, and text
keys with the "C" collation so that rows sort byte for byte as in SQLite.

Each migration runs in one transaction with its record, under a transaction-level advisory
lock, so several daemons starting together migrate once.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from daemon.errors import ForeignStoreError, StoreError
from daemon.store import migrations as _migrations
from daemon.store.migrations import Migration, recorded_version

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATION_LOCK", "POSTGRES_STEPS", "migrate_postgres", "postgres_version"]

#: The advisory lock key that serialises migrations of one database (any fixed bigint).
MIGRATION_LOCK = 0x7265_6769_6D65_64  # "regimed"

_REGIME = "CHECK ({c} IN ('low_volatility', 'normal', 'high_volatility', 'crash', 'recovery'))"

POSTGRES_STEPS: dict[str, tuple[str, ...]] = {
    "core_tables": (
        f"""
        CREATE TABLE bars (
            symbol TEXT COLLATE "C" NOT NULL,
            ts TEXT COLLATE "C" NOT NULL CHECK (length(ts) = 10),
            open DOUBLE PRECISION NOT NULL,
            high DOUBLE PRECISION NOT NULL,
            low DOUBLE PRECISION NOT NULL,
            close DOUBLE PRECISION NOT NULL,
            volume DOUBLE PRECISION NOT NULL,
            regime TEXT {_REGIME.format(c="regime")},
            vix DOUBLE PRECISION,
            vix_source TEXT NOT NULL CHECK (vix_source IN ('vix', 'proxy', 'none')),
            PRIMARY KEY (symbol, ts)
        )
        """,
        """
        CREATE TABLE feature_sets (
            version INTEGER PRIMARY KEY,
            n_features INTEGER NOT NULL CHECK (n_features > 0)
        )
        """,
        f"""
        CREATE TABLE samples (
            source TEXT COLLATE "C" NOT NULL CHECK (source IN ('live', 'archive')),
            symbol TEXT COLLATE "C" NOT NULL,
            ts TEXT COLLATE "C" NOT NULL CHECK (length(ts) = 10),
            regime TEXT NOT NULL {_REGIME.format(c="regime")},
            weight DOUBLE PRECISION NOT NULL,
            label INTEGER CHECK (label IN (0, 1)),
            event TEXT COLLATE "C" CHECK (event IS NULL OR source = 'archive'),
            feature_version INTEGER NOT NULL REFERENCES feature_sets (version),
            features BYTEA NOT NULL,
            PRIMARY KEY (source, symbol, ts)
        )
        """,
        """
        CREATE TABLE kafka_offsets (
            topic TEXT COLLATE "C" NOT NULL,
            partition INTEGER NOT NULL CHECK (partition >= 0),
            next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
            PRIMARY KEY (topic, partition)
        )
        """,
        """
        CREATE TABLE counters (
            name TEXT COLLATE "C" PRIMARY KEY,
            value BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE models (
            version TEXT COLLATE "C" PRIMARY KEY,
            trained_at TEXT COLLATE "C" NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('candidate', 'champion', 'retired', 'rejected')),
            report TEXT NOT NULL DEFAULT '{}'
        )
        """,
        # The files of each registered bundle, so that every host can serve it
        # (daemon.registry.shared); SQLite stores keep them beside the file only.
        """
        CREATE TABLE model_files (
            version TEXT COLLATE "C" NOT NULL REFERENCES models (version),
            file TEXT COLLATE "C" NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (version, file)
        )
        """,
        """
        CREATE TABLE retrain_runs (
            id BIGSERIAL PRIMARY KEY,
            version TEXT,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            promoted INTEGER NOT NULL CHECK (promoted IN (0, 1)),
            reason TEXT NOT NULL,
            report TEXT NOT NULL DEFAULT '{}'
        )
        """,
        """
        CREATE TABLE predictions (
            symbol TEXT COLLATE "C" NOT NULL,
            ts TEXT COLLATE "C" NOT NULL CHECK (length(ts) = 10),
            model_version TEXT COLLATE "C" NOT NULL,
            proba DOUBLE PRECISION NOT NULL,
            prediction INTEGER NOT NULL,
            regime TEXT,
            label INTEGER,
            PRIMARY KEY (symbol, ts, model_version)
        )
        """,
    ),
    "indexes": (
        "CREATE INDEX samples_pending ON samples (source, symbol, ts) WHERE label IS NULL",
        "CREATE INDEX samples_by_regime ON samples (source, regime, weight)",
        "CREATE INDEX predictions_by_model ON predictions (model_version, ts)",
        "CREATE UNIQUE INDEX models_one_champion ON models (status) WHERE status = 'champion'",
    ),
    # SQLite's rebuild for cheaper CHECK constraints; PostgreSQL's checks are cheap as written.
    "cheap_checks": (),
    "promotions": (
        """
        CREATE TABLE promotions (
            id BIGSERIAL PRIMARY KEY,
            version TEXT COLLATE "C" NOT NULL REFERENCES models (version),
            promoted_at TEXT COLLATE "C" NOT NULL,
            previous_version TEXT,
            reason TEXT NOT NULL
        )
        """,
        "CREATE INDEX promotions_by_time ON promotions (promoted_at)",
    ),
    "dead_letters": (
        """
        CREATE TABLE dead_letters (
            source_topic TEXT COLLATE "C" NOT NULL,
            source_partition INTEGER NOT NULL,
            source_offset BIGINT NOT NULL,
            reason TEXT NOT NULL,
            key BYTEA,
            value BYTEA NOT NULL,
            headers TEXT NOT NULL,
            parked_at TEXT NOT NULL,
            PRIMARY KEY (source_topic, source_partition, source_offset)
        )
        """,
    ),
    # Rewrote absolute artifact paths of SQLite stores; a PostgreSQL store never had them.
    "relative_artifact_paths": (),
    "outbox": (
        """
        CREATE TABLE outbox (
            id BIGSERIAL PRIMARY KEY,
            topic TEXT NOT NULL,
            key BYTEA NOT NULL,
            value BYTEA NOT NULL
        )
        """,
    ),
    "label_targets": (
        """
        CREATE TABLE label_targets (
            source TEXT PRIMARY KEY CHECK (source = 'live' OR source = 'archive'),
            target TEXT NOT NULL
        )
        """,
        """
        INSERT INTO label_targets (source, target)
        VALUES ('live', 'direction:h=5:threshold=0'), ('archive', 'direction:h=5:threshold=0')
        """,
        "ALTER TABLE samples ADD COLUMN target TEXT",
        "UPDATE samples SET target = 'direction:h=5:threshold=0'",
    ),
}

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


def postgres_version(conn: psycopg.Connection[tuple[object, ...]], where: str) -> int:
    """The recorded schema version of the database (0 when it has no record table)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return 0
    rows = conn.execute(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return recorded_version([(int(v), str(n), str(a)) for v, n, a in rows], where)  # type: ignore[call-overload]


def _refuse_foreign(conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    rows = conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "ORDER BY tablename LIMIT 4"
    ).fetchall()
    if rows:
        shown = ", ".join(f"table {r[0]}" for r in rows[:3])
        raise ForeignStoreError(
            f"{where}: a PostgreSQL database with no regimed migration record ({shown}"
            f"{', ...' if len(rows) > 3 else ''}): not a regimed store, left untouched; point "
            "store.url at an empty database or at a regimed store"
        )


def migrate_postgres(
    conn: psycopg.Connection[tuple[object, ...]], where: str, target: int | None = None
) -> list[Migration]:
    """Bring the database (a connection in autocommit mode) up to `target` (default: the
    newest); what was applied. Each step: one transaction holding the advisory lock
    `MIGRATION_LOCK`, which re-reads the recorded version, runs the twin statements and
    records the migration."""
    migrations = _migrations.MIGRATIONS
    target = migrations[-1].version if target is None else target
    missing = [m.name for m in migrations if m.name not in POSTGRES_STEPS]
    if missing:
        raise StoreError(
            f"{where}: migration {missing[0]!r} has no PostgreSQL statements "
            "(daemon.store.postgres_schema.POSTGRES_STEPS); this regimed cannot migrate a "
            "PostgreSQL store"
        )
    done: list[Migration] = []
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = postgres_version(conn, where)
            if version == 0:
                _refuse_foreign(conn, where)
            if version >= target:
                return done
            migration = migrations[version]
            conn.execute(_CREATE_MIGRATIONS_TABLE)
            for statement in POSTGRES_STEPS[migration.name]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (
                    migration.version,
                    migration.name,
                    dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                ),
            )
        done.append(migration)
