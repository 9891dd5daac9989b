"""What regimed does with a store it must not use: another program's SQLite file, a damaged
store, a store another daemon holds, and a retrain whose artifact the disk refuses."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from daemon.config import Config, StoreConfig
from daemon.errors import (
    ConfigError,
    ForeignStoreError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
)
from daemon.pipeline.engine import history_rows
from daemon.registry.versions import Registry
from daemon.store.locks import daemon_lock, daemon_lock_path
from daemon.store.sqlite import Store
from tests.size_limit import run_child, run_python


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def regimed(*args: str) -> subprocess.CompletedProcess[str]:
    """`regimed ARGS` in a child process (for `run`, which must not run inside pytest)."""
    return run_child("-m", "daemon", *args)


def config_file(tmp_path: Path, db: Path, extra: str = "") -> Path:
    """A configuration naming `db`, with a broker nobody listens on: every test here ends
    before the consumer starts."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = ["127.0.0.1:9"]\n[metrics]\nport = 0\n'
        f'[store]\npath = "{db}"\n{extra}'
    )
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- another program's database ------------------------------------------------------------


@pytest.fixture
def foreign(tmp_path) -> Path:
    """An SQLite file of another program: tables, rows, no regimed migration record."""
    path = tmp_path / "inventory.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE bars (x INTEGER)")  # even a name regimed uses
        conn.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",)])
    conn.close()
    return path


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(foreign):
    before = sha256(foreign)
    refused = r"inventory\.db: an SQLite database with no regimed migration record"
    with pytest.raises(ForeignStoreError, match=refused) as info:
        Store(foreign)
    assert "table bars, table items" in str(info.value)
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ForeignStoreError):
        Store(foreign, read_only=True)
    assert sha256(foreign) == before
    assert sorted(p.name for p in foreign.parent.iterdir()) == ["inventory.db"]


@pytest.mark.integration  # `regimed run` in a child process
def test_regimed_run_and_status_on_a_foreign_file_exit_2_naming_it(foreign, tmp_path, run_cli):
    before = sha256(foreign)
    config = config_file(tmp_path, foreign)
    done = regimed("run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done.stderr)
    assert f"{foreign}: an SQLite database with no regimed migration record" in line
    assert "Traceback" not in done.stderr
    status = run_cli("status", "--config", str(config))
    assert status.code == 2
    assert str(foreign) in status.err
    assert sha256(foreign) == before


# -- a damaged store -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def history_db(tmp_path_factory, sp500, vix) -> Path:
    """A store with the bundled S&P 500 as live samples (2 MB), checkpointed, no WAL."""
    path = tmp_path_factory.mktemp("history") / "regimed.db"
    config = Config().replace(store=StoreConfig(path=str(path)))
    with Store.open(config.store) as store:
        bars, samples = history_rows(config, "^GSPC", sp500, vix)
        store.write_batch(bars=bars, samples=samples)
    return path


@pytest.fixture
def damaged(history_db, tmp_path) -> Path:
    """A copy of `history_db` whose last page (a b-tree page of bars or samples, not the
    schema) is overwritten: the file opens, its data does not read."""
    path = tmp_path / "regimed.db"
    data = bytearray(history_db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    last = len(data) - page_size
    data[last : last + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_store_is_refused_by_the_start_up_check(damaged):
    Store(damaged, quick_check_seconds=0).close()  # without the check it opens
    with pytest.raises(StoreCorruptError, match=r"regimed\.db: the store is damaged") as info:
        Store(damaged, quick_check_seconds=30)
    assert "PRAGMA quick_check: " in str(info.value)
    assert "restore it from a backup" in str(info.value)


def test_a_sound_store_passes_the_start_up_check(history_db, caplog):
    caplog.set_level("INFO", logger="daemon.store.sqlite")
    with Store(history_db, quick_check_seconds=30) as store:
        assert store.bar_count() > 4000
    assert "quick_check ok in" in caplog.text


@pytest.mark.integration  # `regimed run` in a child process
def test_regimed_run_on_a_damaged_store_exits_1_naming_it(damaged, tmp_path):
    done = regimed("run", "--config", str(config_file(tmp_path, damaged)))
    assert done.returncode == 1, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"error: {damaged}: the store is damaged (PRAGMA quick_check: ")
    assert line.endswith('restore it from a backup (docs/operations.md, "Back up and restore '
                         'the store")')  # fmt: skip
    assert "Traceback" not in done.stderr


# -- one daemon per store ------------------------------------------------------------------


def test_the_daemon_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
    db = tmp_path / "regimed.db"
    lock = daemon_lock_path(db)
    assert lock == tmp_path / "regimed.db.lock"
    with daemon_lock(db):
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(StoreBusyError) as info, daemon_lock(db):
            pass
        assert str(info.value).startswith(
            f"{db}: the store is held by another regimed daemon (pid {os.getpid()}, lock {lock})"
        )
    assert lock.read_text() == ""
    with daemon_lock(db):  # free again
        pass


def test_a_lock_file_that_cannot_be_created_is_a_store_error_naming_it(tmp_path):
    db = tmp_path / "missing-folder" / "regimed.db"
    refused = r"regimed\.db\.lock: cannot open the lock file: No such file or directory"
    with pytest.raises(StoreError, match=refused), daemon_lock(db):
        pass


# -- a retrain on a full disk --------------------------------------------------------------

#: Two models, one of them a random forest of deep trees whose file (about 3 MB) is larger
#: than the store (2 MB), so a cap just above the store's size refuses the artifact only.
BIG_FOREST = """
[training]
models = ["logistic_regression", "random_forest"]
n_jobs = 1
[models.random_forest]
n_estimators = 40
max_depth = 30
min_samples_leaf = 1
max_samples = 1.0
"""


@pytest.mark.integration  # `regimed retrain` in a child process
def test_a_retrain_whose_artifact_the_disk_refuses_ends_with_one_error_line(
    history_db, tmp_path
):
    db = tmp_path / "regimed.db"
    db.write_bytes(history_db.read_bytes())
    config = config_file(tmp_path, db, BIG_FOREST)
    cap = db.stat().st_size + 512 * 1024
    done = run_python(
        f"""
import sys
from daemon.cli.main import main
limit_writes({cap})
sys.exit(main(["retrain", "--config", {str(config)!r}]))
"""
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = error_lines(done.stderr)
    models = tmp_path / "models"
    assert line.startswith("error: retrain failed: model version ")
    assert f"cannot write {models}/.tmp-" in line
    assert line.endswith("/random_forest.skops: File too large")
    assert [p.name for p in models.iterdir()] == []  # nothing half-written is left
    with Store(db, read_only=True) as store:
        assert Registry(store).models() == []
        run = Registry(store).last_retrain_run()
    assert run is not None and not run.promoted
    assert "random_forest.skops: File too large" in run.reason
