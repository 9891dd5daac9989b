"""How many threads a model fit uses, and the environment that makes those threads yield.

The numeric libraries run their parallel parts on thread pools: OpenMP (LightGBM, XGBoost,
scikit-learn's histogram boosting), BLAS (NumPy's OpenBLAS, or MKL) and joblib (the forests).
An OpenMP thread that waits for work spins on its core for a while before it sleeps (GNU
OpenMP's default); beside a busy consumer and writer those spinning threads take the cores the
ingest needs and wait for the ones it holds: on two cores LightGBM fitted in 18 to 31 s instead
of 1 to 3 s, a whole retrain took 82 to 141 s instead of 18 to 34 s. With
`OMP_WAIT_POLICY=PASSIVE` a waiting thread sleeps at once (docs/benchmarks.md, "Retrain beside
a busy consumer").

These settings are read once, when each library loads, so they have to be in a process's
environment before the first import: the daemon hands them to its retrain process at spawn
(`thread_environment`), and `regimed retrain` and `regimed evaluate` set them before they
import the trainer (`thread_limits`). No heavy import here: the daemon imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

#: `training.n_jobs` / `evaluate.n_jobs` value: as many threads as there are cores to spare.
AUTO: Literal["auto"] = "auto"

#: Cores the running daemon keeps for itself while its retrain process fits: one for the
#: consumer process (polling, decoding, the pipeline) and one for the writer process.
DAEMON_CORES = 2

#: The variables that cap each library's thread pool at `n_jobs` (OpenMP, the BLAS builds
#: NumPy and SciPy may ship with, numexpr, and joblib's `cpu_count`).
THREAD_COUNT_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "LOKY_MAX_CPU_COUNT",
)
#: OpenMP threads sleep when they wait instead of spinning on a core.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (`taskset`, systemd's
    `CPUAffinity=`), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def resolve_n_jobs(setting: int | str, *, reserved: int = 0, cores: int | None = None) -> int:
    """`setting` (`training.n_jobs`, `evaluate.n_jobs`) as a thread count: a whole number as it
    is; `"auto"` the usable cores (`cores`, default `usable_cores()`) less `reserved`, at least 1.

    >>> resolve_n_jobs("auto", reserved=DAEMON_CORES, cores=8)
    6
    >>> resolve_n_jobs("auto", reserved=DAEMON_CORES, cores=2)
    1
    >>> resolve_n_jobs("auto", cores=2)
    2
    >>> resolve_n_jobs(3, reserved=DAEMON_CORES, cores=2)
    3
    """
    if isinstance(setting, int):
        return setting
    if setting != AUTO:
        raise ValueError(f"n_jobs = {setting!r}: expected a whole number or {AUTO!r}")
    available = usable_cores() if cores is None else cores
    return max(1, available - reserved)


def thread_environment(n_jobs: int, base: Mapping[str, str]) -> dict[str, str]:
    """`base` (a process environment) with every thread pool capped at `n_jobs` threads and
    OpenMP's waiting threads asleep: the environment of a process that fits models."""
    env = dict(base)
    env.update(dict.fromkeys(THREAD_COUNT_VARIABLES, str(n_jobs)))
    env.update(WAIT_POLICY)
    return env


@contextmanager
def thread_limits(n_jobs: int) -> Iterator[None]:
    """`thread_environment(n_jobs)` in this process's environment while the block runs, then
    the environment as it was. Takes effect on the libraries first imported inside the block;
    one that is already loaded keeps what it read then."""
    saved = {name: os.environ.get(name) for name in (*THREAD_COUNT_VARIABLES, *WAIT_POLICY)}
    os.environ.update(thread_environment(n_jobs, {}))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
