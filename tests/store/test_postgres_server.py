"""The throw-away PostgreSQL server of the tests: a fresh, empty database per test."""

from __future__ import annotations

import psycopg


def test_each_database_is_fresh_and_reached_over_loopback(postgres, postgres_url):
    other = postgres.database()
    try:
        with psycopg.connect(postgres_url) as conn:
            conn.execute("CREATE TABLE marker (x INTEGER)")
            address = conn.execute("SELECT host(inet_server_addr())").fetchone()
        with psycopg.connect(other) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
    finally:
        postgres.drop(other)
    assert address == ("127.0.0.1",)
    assert tables == (0,)
