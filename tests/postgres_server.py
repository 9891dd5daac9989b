"""A throw-away PostgreSQL server for the tests: initdb + pg_ctl from Debian's `postgresql`
package in a temporary directory, on a free loopback port, trust authentication on 127.0.0.1
only, no Unix socket; stopped by pg_ctl (and by pid if that fails) when the context exits.
For speed it runs without fsync; `durable=True` keeps PostgreSQL's durable defaults (fsync,
synchronous_commit, full_page_writes on), as `benchmarks/ingest.py --store postgresql` needs.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user (through
`runuser`) in a directory that user owns. `.ci/run` installs the package when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

#: Seconds pg_ctl waits for the server to start or stop.
PG_CTL_TIMEOUT_S = 60
#: Directories searched for initdb and pg_ctl when they are not on PATH (Debian keeps them in a
#: versioned directory); the newest version wins.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: `$REGIMED_PG_BIN`, PATH, or the newest
    /usr/lib/postgresql/<version>/bin. RuntimeError naming what is missing otherwise."""
    configured = os.environ.get("REGIMED_PG_BIN")
    if configured:
        return Path(configured)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    found = [
        Path(d)
        for d in glob.glob(PG_BIN_GLOB)
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]
    if not found:
        raise RuntimeError(
            f"no PostgreSQL server: initdb and pg_ctl are neither on PATH nor in {PG_BIN_GLOB} "
            "(apt-get install postgresql, or set REGIMED_PG_BIN)"
        )
    return max(found, key=lambda d: _version_key(d.parent.name))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster for a test session; `database()` makes a fresh database."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = postgres_bin_dir()
        self.port = 0
        self.user = "postgres"
        self._as_postgres = os.geteuid() == 0
        self._dir = Path(tempfile.mkdtemp(prefix="regimed-pg-"))
        self.data = self._dir / "data"
        self.log = self._dir / "server.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S + 30, check=False
        )

    def start(self) -> PostgresServer:
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        done = self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        hba = self.data / "pg_hba.conf"
        hba.write_text("host all all 127.0.0.1/32 trust\n")
        for attempt in range(3):
            self.port = _free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c max_connections=200"
            )
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            done = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                "-t", str(PG_CTL_TIMEOUT_S), "start",
            )  # fmt: skip
            if done.returncode == 0:
                return self
            if attempt == 2:
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{log}")
        return self

    @property
    def pid(self) -> int:
        """The postmaster's pid (the parent of every server process)."""
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def database(self) -> str:
        """Create a fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by `database()`, closing its sessions first."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL by pid) and remove its directory."""
        if self.data.exists():
            done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            pid_file = self.data / "postmaster.pid"
            if done.returncode != 0 and pid_file.exists():
                with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                    pid = int(pid_file.read_text().splitlines()[0])
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
