"""The store's writer process: a consumer batch's SQLite transaction on the other core.

The consumer thread decodes, labels and computes a poll's rows; writing them to SQLite (binding
every parameter, the b-trees, the WAL and its fsync) costs about as much again, and Python's
GIL keeps a writer thread from overlapping with it. `StoreWriter` writes each `Batch` (`write`)
in a child process with its own connection to the same file, one batch in flight: while it writes
batch N, the consumer polls and computes batch N+1, then waits for N's result before it hands
over N+1 and commits N's offsets to Kafka. SQLite stays the truth: the child writes each batch
(bars, samples, labels, offsets, counters) in one transaction, exactly as `write_batch` does in
process, and the consumer acts on a batch (offset commit, metrics) only after that transaction
has committed.

The child ignores SIGINT and SIGTERM from its first instruction on (it is launched with them
ignored, so a signal sent to the whole process group while it starts cannot kill it; a stop is
the parent's to order: it waits for the batch in hand, then closes the writer, and kills it if it
does not exit in time), and dies with its parent (`PR_SET_PDEATHSIG`), so a killed daemon
leaves no writer behind to commit after its successor has read the offsets; SQLite rolls back a
transaction its writer did not finish.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from daemon.domain import Batch
from daemon.errors import StoreError
from daemon.store.sqlite import BatchResult, Store

logger = logging.getLogger(__name__)

#: Seconds to wait for the child to open the store, and for it to exit when closed.
START_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def write(store: Store, batch: Batch) -> BatchResult:
    """Store one poll's `Batch` in one transaction (`Store.write_batch`): all of it or none."""
    return store.write_batch(
        bars=batch.bars,
        samples=batch.samples,
        labels=batch.labels,
        block=batch.block,
        offsets=batch.offsets,
        predictions=batch.predictions,
        counters=batch.counters,
        dead_letters=batch.dead_letters,
        outbox=batch.outbox,
    )


class StoreWriter:
    """`write` in a child process; one batch in flight (`submit`, then `result`)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5_000) -> None:
        self.path = os.fspath(path)
        context = multiprocessing.get_context("spawn")  # the parent has threads: never fork
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, self.path, busy_timeout_ms, os.getpid()),
            name="regimed-store-writer",
            daemon=True,
        )
        _start_ignoring_stop_signals(self._process)
        child.close()
        self._conn: Connection | None = parent
        self._in_flight = False
        self._receive(START_TIMEOUT_S, "open the store")

    @property
    def in_flight(self) -> bool:
        """Whether a submitted batch waits for its `result`."""
        return self._in_flight

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, batch: Batch | None = None, /, **rows: Any) -> None:
        """Hand over one batch: a `Batch`, or the keyword arguments of `Store.write_batch`."""
        if self._in_flight:
            raise StoreError(f"{self.path}: the writer has a batch in flight; take its result")
        conn = self._live()
        try:
            message = batch if batch is not None else rows
            conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path}: the writer process is gone ({exc})") from None
        self._in_flight = True

    def result(self, timeout_s: float | None = None) -> BatchResult:
        """Wait for the batch in flight to be committed (or rolled back): its `BatchResult`;
        a failed transaction raises `StoreError` with the child's reason."""
        if not self._in_flight:
            raise StoreError(f"{self.path}: no batch in flight")
        try:
            result = self._receive(timeout_s, "write a batch")
        finally:
            self._in_flight = False
        assert isinstance(result, BatchResult)
        return result

    def write(self, batch: Batch | None = None, /, **rows: Any) -> BatchResult:
        """`submit` and `result`: one batch, synchronously."""
        self.submit(batch, **rows)
        return self.result()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the child after the batch in flight (whose result is then dropped: take it
        first); kill it if it does not exit within `timeout_s`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send_bytes(b"")
            conn.close()
        self._process.join(timeout_s)
        if self._process.is_alive():
            logger.warning("store writer %s did not exit in %.0f s: killed", self.pid, timeout_s)
            self._process.kill()
            self._process.join(timeout_s)
        self._in_flight = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _live(self) -> Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the writer is closed")
        return self._conn

    def _receive(self, timeout_s: float | None, what: str) -> Any:
        conn = self._live()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not conn.poll(0.5):
            if not self._process.is_alive():
                raise StoreError(
                    f"{self.path}: the writer process exited with {self._process.exitcode} "
                    f"before it could {what}"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise StoreError(f"{self.path}: the writer did not {what} in {timeout_s:.0f} s")
        try:
            # The child is this daemon's own process, on a private pipe.
            status, payload = pickle.loads(conn.recv_bytes())  # noqa: S301
        except (EOFError, OSError) as exc:
            raise StoreError(f"{self.path}: the writer process is gone ({exc!r})") from None
        if status != "ok":
            raise StoreError(str(payload))
        return payload


def _start_ignoring_stop_signals(process: multiprocessing.process.BaseProcess) -> None:
    """Start `process` with SIGINT and SIGTERM ignored from its first instruction on: an
    ignored signal stays ignored across exec, so the parent ignores them for the moment it
    takes to launch the child. A signal sent to the whole process group (systemd's stop,
    Ctrl-C) while the child imports its modules, a second or more, then cannot kill it.

    Handlers can only be changed on the main thread; elsewhere (a service run from a test
    thread) the child is started as it is and ignores the signals once it runs `_serve`.
    """
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    saved = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _STOP_SIGNALS}
    try:
        process.start()
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); exit at once if it
    is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _serve(conn: Connection, path: str, busy_timeout_ms: int, parent: int) -> None:
    """The child: open the store, then write each batch received until an empty message."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)  # already, when started from the main thread
    _die_with_parent(parent)
    try:
        store = Store(path, busy_timeout_ms=busy_timeout_ms)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("error", f"{exc}")))
        sys.exit(1)
    store.checkpoint_in_background()
    conn.send_bytes(pickle.dumps(("ok", None)))
    with store:
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the parent is gone
            if not message:
                return
            try:
                batch = pickle.loads(message)  # noqa: S301 - from the parent, on a private pipe
                if isinstance(batch, Batch):
                    reply: tuple[str, Any] = ("ok", write(store, batch))
                else:
                    reply = ("ok", store.write_batch(**batch))
            except Exception as exc:
                reply = ("error", f"{exc}")
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
