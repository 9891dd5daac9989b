"""The memory a retrain used: the peak resident set of the process that ran it.

The daemon runs each retrain in a process of its own (daemon.runtime.retrain_runner), so that
process's peak is the run's: the report records it (`RetrainReport.peak_rss_bytes`) and the
daemon exports it (`regimed_retrain_peak_rss_bytes`). `regimed retrain` reports the peak of the
command's process, which ran the retrain and nothing larger. No heavy import here.

On Linux the peak is `VmHWM` of /proc/self/status, not `getrusage(RUSAGE_SELF).ru_maxrss`:
the kernel carries the resident set a process had before `exec` into its `ru_maxrss`, and a
child spawned by the daemon had the daemon's pages mapped until then (fork or vfork), so
`ru_maxrss` would report at least the daemon's size. `VmHWM` belongs to the memory of the
program now running. `RUSAGE_CHILDREN` in the parent is no better: the largest of all the
children it ever waited for, not this run's.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["peak_rss_bytes"]

_STATUS = Path("/proc/self/status")


def peak_rss_bytes() -> int:
    """The largest resident set this process's program has had so far, in bytes (its own
    threads included, its child processes not)."""
    try:
        with _STATUS.open() as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # without /proc
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, else KiB
