"""The throw-away PostgreSQL server of the tests: a fresh, empty database per test."""

from __future__ import annotations

import psycopg
import pytest


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


def _settings(url):
    with psycopg.connect(url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        shown = tuple(
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("fsync", "synchronous_commit", "full_page_writes")
        )
    return backend, shown


def _parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.integration
def test_a_durable_server_keeps_fsync_and_names_its_postmaster(postgres, postgres_url):
    from tests.postgres_server import PostgresServer

    with PostgresServer(durable=True) as durable:
        backend, shown = _settings(durable.admin_url)
        assert shown == ("on", "on", "on")
        assert _parent(backend) == durable.pid
        data = durable.data
    assert not data.exists()
    backend, shown = _settings(postgres_url)
    assert shown == ("off", "off", "off")
    assert _parent(backend) == postgres.pid
