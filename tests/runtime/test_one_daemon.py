"""One daemon per store, with real `regimed run` processes on the real broker: a second daemon
on a held store exits at once naming the holder, the first keeps consuming, and the read-only
commands keep working beside it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from consumers.replay import publish
from daemon.registry.versions import Registry
from daemon.store.locks import daemon_lock, daemon_lock_path
from daemon.store.sqlite import Store
from tests.factories import children, events_stored, make_data, numbered, wait_for, write_config

pytestmark = pytest.mark.integration


def open_files(pid: int) -> set[str]:
    """What the descriptors of process `pid` point at."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            names.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return names


def test_a_second_daemon_on_a_held_store_exits_at_once_and_the_first_keeps_running(
    kafka_config, tmp_path, processes, run_cli
):
    db = Path(kafka_config.store.path)
    X, y = make_data()
    with Store(db) as store:  # a registered model, for `models verify` and `report`
        Registry(store).register(
            "v1",
            {"logistic_regression": LogisticRegression().fit(X, y)},
            trained_at=dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC),
            trigger="manual",
            data_window=("2020-01-02", "2023-12-29"),
            sample_counts={},
        )
    n = 1000
    events = numbered(2 * n)
    publish(kafka_config.kafka, events[:n], progress=False)
    config = write_config(kafka_config, tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
    log = tmp_path / "first.log"
    with log.open("w") as stderr:  # a file: a pipe nobody reads would stall the daemon
        first = subprocess.Popen(command, env=env, stderr=stderr)
    processes.append(first)
    wait_for(lambda: events_stored(kafka_config) >= 1, 60, "the first daemon to store events")

    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    processes.append(second)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    lock = daemon_lock_path(db)
    assert errors == [
        f"error: {db}: the store is held by another regimed daemon (pid {first.pid}, lock "
        f"{lock}); stop that daemon first, or point store.path at another file"
    ]
    assert "Traceback" not in err

    assert first.poll() is None
    publish(kafka_config.kafka, events[n:], progress=False)
    wait_for(lambda: events_stored(kafka_config) == 2 * n, 60, "the first daemon to go on")
    # Only the daemon holds the lock, not the processes it started (the store's writer).
    helpers = children(first.pid)
    assert helpers, "the daemon runs its store writer in a child process"
    assert str(lock) in open_files(first.pid)
    for pid in helpers:
        assert str(lock) not in open_files(pid)

    for command_line in (["status"], ["models", "list"], ["models", "verify"], ["report"]):
        result = run_cli(*command_line, "--config", str(config))
        assert result.code == 0, (command_line, result.err)

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, log.read_text()
    with Store(db, read_only=True) as store:
        assert store.counter("events_stored") == 2 * n  # each event processed once
    with daemon_lock(db):  # released with the daemon
        pass
