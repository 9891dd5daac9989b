"""A throw-away Dask cluster for the tests: one `dask scheduler` and `workers` `dask worker`
processes (one thread each, no nanny, so a worker's pid is the process that fits) on free
loopback ports, started as subprocesses of this test session, waited for (bounded) and stopped
by pid when the context exits.

The processes come from the virtual environment running the tests (its `dask` script), so the
workers import the same `daemon` package as the test (and, with the repository on their
PYTHONPATH, a model class a test defines).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from daemon.training.threads import thread_environment

#: The repository, on the workers' import path: a test's own model class is imported there.
REPO = Path(__file__).resolve().parents[1]

#: Seconds the scheduler and the workers get to come up (a busy two-core machine is slow).
START_TIMEOUT_S = 90.0
#: Seconds a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DaskCluster:
    """A running cluster: its scheduler address and each worker process by its address."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: worker address -> pid, filled once every worker has registered
    worker_pids: dict[str, int] = field(default_factory=dict)
    logs: Path = Path()

    def kill_worker(self, address: str) -> None:
        """SIGKILL the worker at `address` (by its pid)."""
        os.kill(self.worker_pids[address], signal.SIGKILL)

    def log_text(self) -> str:
        """Every process's log, for a failing test's message."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


def _dask() -> str:
    script = Path(sys.executable).parent / "dask"
    if not script.exists():
        raise RuntimeError(f"no `dask` script beside {sys.executable}: pip install distributed")
    return str(script)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = thread_environment(1, os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with log.open("wb") as out:
        return subprocess.Popen(
            [_dask(), *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def dask_cluster(workers: int = 2) -> Iterator[DaskCluster]:
    """A scheduler and `workers` one-thread workers on 127.0.0.1, stopped by pid on exit."""
    from distributed import Client

    logs = Path(tempfile.mkdtemp(prefix="regimed-dask-"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start(
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        logs / "scheduler.log",
    )
    cluster = DaskCluster(address, scheduler, logs=logs)
    try:
        for i in range(workers):
            cluster.workers.append(
                _start(
                    [
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                        "--local-directory",
                        str(logs / f"w{i}"),
                    ],
                    logs / f"worker-{i}.log",
                )
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        with Client(address, timeout=START_TIMEOUT_S) as client:
            while len(client.scheduler_info()["workers"]) < workers:
                dead = [p.args for p in (scheduler, *cluster.workers) if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Dask cluster at {address} did not start "
                        f"(exited: {dead}):\n{cluster.log_text()}"
                    )
                time.sleep(0.2)
            cluster.worker_pids = {str(k): int(v) for k, v in client.run(os.getpid).items()}
        yield cluster
    finally:
        for proc in (*cluster.workers, scheduler):
            _stop(proc)
