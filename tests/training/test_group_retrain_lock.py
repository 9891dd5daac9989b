"""One retrain for a group of daemons sharing a PostgreSQL store: the retrain lock is a
session-level advisory lock, refused to others while held (naming the holder) and released
when its holder is SIGKILLed, so another daemon runs the next retrain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from daemon.config import StoreConfig
from daemon.errors import RetrainBusy
from daemon.training.lock import store_retrain_lock

HOLD = """
import sys, time
from daemon.config import StoreConfig
from daemon.training.lock import store_retrain_lock
with store_retrain_lock(StoreConfig(path=sys.argv[2], url=sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_the_group_lock_is_exclusive_and_dies_with_its_holder(postgres_url, tmp_path, processes):
    config = StoreConfig(path=str(tmp_path / "regimed.db"), url=postgres_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, postgres_url, config.path],
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with (
        pytest.raises(RetrainBusy, match=rf"regimed pid {holder.pid} on "),
        store_retrain_lock(config),
    ):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    # The server dropped the dead session's lock: taken again, and exclusive again.
    with (
        store_retrain_lock(config, timeout_s=30),
        pytest.raises(RetrainBusy),
        store_retrain_lock(config),
    ):
        pass
