"""The test cluster itself: a scheduler and two one-thread worker processes that run tasks."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration


def test_the_cluster_has_two_one_thread_workers_in_their_own_processes(dask_cluster):
    from distributed import Client

    with Client(dask_cluster.address, timeout=30) as client:
        workers = client.scheduler_info()["workers"]
        assert sorted(w["nthreads"] for w in workers.values()) == [1, 1]
        pids = client.run(os.getpid)
    assert set(pids.values()) == set(dask_cluster.worker_pids.values())
    assert os.getpid() not in pids.values()
