"""The peak memory a retrain reports is its own process's, in bytes, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from daemon.training.memory import peak_rss_bytes

MIB = 2**20


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_the_peak_grows_with_what_this_process_touches_and_keeps_it_once_freed():
    before = peak_rss_bytes()
    # past the high-water mark by 64 MiB, every page written
    block = np.ones((before - resident_bytes() + 64 * MIB) // 8)
    during = peak_rss_bytes()
    del block
    assert during >= before + 60 * MIB
    assert peak_rss_bytes() >= before + 60 * MIB  # a high-water mark


def test_a_spawned_process_reports_its_own_peak_not_the_larger_parents():
    """The daemon is large when it spawns the retrain process; the kernel carries the parent's
    resident set into the child's ru_maxrss across exec, which must not become the run's."""
    ballast = np.ones(256 * MIB // 8)  # this process now holds 256 MiB more than the child
    child = subprocess.run(
        [sys.executable, "-c",
         "from daemon.training.memory import peak_rss_bytes; print(peak_rss_bytes())"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    own = int(child.stdout)
    assert 1 * MIB < own < peak_rss_bytes() - 200 * MIB
    assert ballast.sum() == ballast.size  # keep the ballast alive through the spawn
