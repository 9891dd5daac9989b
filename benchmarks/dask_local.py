"""`--dask` for the retrain benchmarks: a scheduler address as given, or `local`: a scheduler and
two one-thread workers started on loopback for the run and stopped by pid (the tests' cluster,
tests/dask_cluster.py)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def cluster_address(spec: str, workers: int = 2) -> Iterator[str]:
    """The scheduler address of `spec` ("local" starts a cluster for the block)."""
    if spec != "local":
        yield spec
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.dask_cluster import dask_cluster

    with dask_cluster(workers=workers) as cluster:
        yield cluster.address
