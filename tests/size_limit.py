"""A full disk without root: Python code run in a child process whose writes past a size are
refused by the kernel.

`RLIMIT_FSIZE` caps the size of every file the process writes; with SIGXFSZ ignored, a write at
or past the cap fails with EFBIG ("File too large") exactly where a full disk fails with ENOSPC:
in `write(2)`, on the real write path. The cap is set by the child itself, after its set-up, so
only the code under test runs under it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Defines `limit_writes(n_bytes)` in the child.
PRELUDE = """
import resource, signal

def limit_writes(n_bytes):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, resource.RLIM_INFINITY))
"""

#: Defines `models`: a logistic regression (9 KB saved) and an XGBoost model (650 KB saved),
#: so that under `limit_writes(256 * 1024)` a bundle's save fails midway, at the second file.
MODELS = """
import numpy as np
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier

rng = np.random.default_rng(0)
X = rng.normal(size=(2000, 6)).astype(np.float32)
y = (X[:, 0] + rng.normal(size=2000) > 0).astype(np.int8)
models = {
    "logistic_regression": LogisticRegression().fit(X, y),
    "xgboost": XGBClassifier(n_estimators=300, max_depth=6, n_jobs=1).fit(X, y),
}
"""


def run_child(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a fresh interpreter from the project root, with no REGIMED_
    variables; its exit status and output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` (after `PRELUDE`) in a child process (`run_child`)."""
    return run_child("-c", PRELUDE + code)
