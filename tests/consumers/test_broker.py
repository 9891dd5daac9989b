"""The embedded broker never outlives the process that started it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.factories import alive, wait_for

pytestmark = pytest.mark.integration

STARTER = """
import sys, time
from consumers.broker import EmbeddedBroker
broker = EmbeddedBroker().start()
print(broker.process.pid, flush=True)
time.sleep(120)
"""


def test_the_broker_dies_with_a_parent_killed_outright():
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True
    )
    try:
        broker = int(parent.stdout.readline())
        assert alive(broker)
        parent.kill()  # SIGKILL: no clean-up code of the parent runs
        parent.wait(timeout=10)
        wait_for(lambda: not alive(broker), 10, f"broker pid {broker} to end")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        parent.stdout.close()
