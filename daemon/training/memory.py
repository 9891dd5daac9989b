"""The memory a retrain used: the peak resident set of the process that ran it.

The daemon runs each retrain in a process of its own (daemon.runtime.retrain_runner), so that
process's peak is the run's: the report records it (`RetrainReport.peak_rss_bytes`) and the
daemon exports it (`regimed_retrain_peak_rss_bytes`). `regimed retrain` reports the peak of the
command's process, which also ran the retrain and nothing larger. No heavy import here.
"""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_bytes"]


def peak_rss_bytes() -> int:
    """The largest resident set this process has had so far, in bytes.

    `ru_maxrss` of RUSAGE_SELF: this process only, not its children (the model fits run on
    threads of this process). Linux counts it in KiB, macOS in bytes.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
