"""`regimed demo`: the whole loop on real data in a few minutes, on one machine.

Starts the embedded Kafka broker on a free loopback port, replays the bundled S&P 500, NASDAQ and
VIX history (1999-2018) through it, runs the daemon on it with a temporary state directory (or
`--state-dir`), builds the rare-event archive, runs one retrain through the daemon's own retrain
job once the replay is consumed, prints the per-regime validation table beside the naive
references with the promotion decision, writes the HTML report, and keeps serving /metrics until
Ctrl-C (`--exit-after-retrain` ends after the table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO, TypeVar

from daemon.config import Config, StoreConfig
from daemon.errors import DemoError, ListenError
from daemon.report.progress import Progress

if TYPE_CHECKING:
    from daemon.training.report import RetrainReport

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The demo's topic; a fresh broker holds nothing else.
TOPIC = "market.bars"
#: How long each wait of the demo may take before it gives up with a clear message.
CONSUME_TIMEOUT_S = 300.0
RETRAIN_TIMEOUT_S = 600.0


def demo_config(
    base: Config, state_dir: Path, bootstrap: str, metrics_port: int, store_url: str = ""
) -> Config:
    """`base` pointed at the demo's broker and state directory, with the bundled index as the
    market symbol (the bundled history has ^GSPC, not SPY).

    The store is the SQLite file in the state directory, also when `base` names a PostgreSQL
    store (`store.url`): the demo's replay would otherwise write 20 years of bundled bars, and
    Kafka offsets of its own throw-away broker, into the database a group of daemons shares (the
    offsets of a topic of the same name included). `store_url` (`regimed demo --store-url`)
    names a PostgreSQL database for the demo instead, with `store.password` of `base`."""
    kafka = dataclasses.replace(
        base.kafka,
        bootstrap_servers=(bootstrap,),
        topic=TOPIC,
        dlq_topic="",
        group_id="regimed-demo",
        group_instance_id="regimed-demo-1",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        security_protocol="PLAINTEXT",
    )
    return base.replace(
        kafka=kafka,
        store=StoreConfig(
            path=str(state_dir / "regimed.db"), url=store_url, password=base.store.password
        ),
        metrics=dataclasses.replace(base.metrics, port=metrics_port),
        regime=dataclasses.replace(base.regime, market_symbol="^GSPC"),
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo as Ctrl-C does: a KeyboardInterrupt in the main thread unwinds
    `run_demo`, which stops the daemon and the broker and removes a temporary state directory.
    A further SIGTERM during that clean-up is ignored (a second Ctrl-C still forces the exit;
    the broker then dies with the demo, see `consumers.broker`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _state(state_dir: str | None) -> Iterator[Path]:
    if state_dir is not None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="regimed-demo-") as tmp:
        yield Path(tmp)


class _Daemon:
    """The service on its own thread; an error that ends it is kept for the main thread to
    raise, so a busy port says so instead of a traceback from the thread."""

    def __init__(self, config: Config) -> None:
        from daemon.runtime.service import Service

        self.service = Service(config)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="regimed", daemon=False)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # raised again in the main thread, by check()
            self.failure = exc

    def check(self, doing: str) -> None:
        """Raise why the daemon stopped, if it did."""
        if self.thread.is_alive():
            return
        if isinstance(self.failure, ListenError):
            hint = "choose another with --metrics-port PORT; 0 picks a free one"
            raise ListenError(f"{self.failure} ({hint})") from None
        if self.failure is not None:
            raise self.failure
        raise DemoError(f"the daemon stopped while {doing} (see the log)")

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(timeout=60)


def run_demo(
    base: Config,
    *,
    state_dir: str | None = None,
    store_url: str = "",
    exit_after_retrain: bool = False,
    metrics_port: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    stop: threading.Event | None = None,
) -> RetrainReport:
    """Run the demo; the retrain report. `stop` (Ctrl-C sets it) ends the serving phase."""
    from consumers.broker import EmbeddedBroker
    from consumers.replay import bundled_events, ensure_topic, publish
    from daemon.report.retrain_text import render
    from daemon.runtime.service import State
    from daemon.store.sqlite import Store
    from daemon.training.archive import build_archive
    from daemon.training.report import RetrainReport

    stop = stop or threading.Event()
    started = time.monotonic()

    def step(text: str) -> None:
        err.write(f"[{time.monotonic() - started:6.1f}s] {text}\n")
        err.flush()

    port = base.metrics.port if metrics_port is None else metrics_port
    with _state(state_dir) as state, EmbeddedBroker(log_path=None) as broker:
        step(f"embedded Kafka broker on {broker.bootstrap}; state in {state}")
        step(f"label target {base.label.key} (--target picks another)")
        if store_url:
            step(f"store in the PostgreSQL database {store_url}")
        elif base.store.url:
            step(
                f"store.url is not used: the demo keeps its own store in {state} "
                "(--store-url URL puts it in a PostgreSQL database of its own)"
            )
        config = demo_config(base, state, broker.bootstrap, port, store_url)
        if store_url:
            _claim_store(config)
        ensure_topic(config.kafka, TOPIC, 1)
        ensure_topic(config.kafka, config.kafka.effective_dlq_topic, 1)
        events = bundled_events(config.regime.vix_symbol)
        step(f"replaying {len(events):,} bundled bars (S&P 500, NASDAQ 1999-2018, VIX 2014-2018)")
        publish(config.kafka, events, topic=TOPIC, total=len(events), progress=True)

        daemon = _Daemon(config)
        service = daemon.service
        daemon.thread.start()
        try:
            # Running: consuming, and the retrain schedule started (a trigger needs it).
            _wait(lambda: service.state is State.RUNNING, 60, "starting", daemon)
            step(
                f"daemon running; metrics on "
                f"http://{config.metrics.host}:{service.metrics_port}/metrics"
            )
            _consume(config, len(events), daemon, err)
            with Store.open(config.store) as store:
                archive = build_archive(config, store, "bundled")
            step(
                f"archive built: {archive.total:,} samples of "
                f"{sum(1 for e in archive.events if e.kept)} events (2020-2023 have no "
                "bundled data)"
            )
            retrains = service.retrains
            assert retrains is not None
            step("retraining: 8 models on the live and archive samples, in a child process")
            if not retrains.trigger("demo"):
                # A state directory whose weekly run is overdue catches it up at start-up.
                step("a retrain is already running (a missed weekly run); waiting for it")
            result = _wait(
                lambda: retrains.results[0] if retrains.results else None,
                RETRAIN_TIMEOUT_S,
                "waiting for the retrain",
                daemon,
            )
            report = result.report or RetrainReport()
            if result.outcome not in ("promoted", "rejected", "unchanged"):
                raise DemoError(f"the retrain {result.outcome}: {result.reason}")
            out.write("\n" + render(report))
            if result.outcome != "promoted" and not retrains.champion_serving():
                out.write(
                    "\nno champion: the daemon keeps ingesting and labelling bars, and scores "
                    "none until a retrain shows skill\n"
                )
            # A temporary state directory goes away at the end: then the report goes here.
            page = _write_report(
                Path(config.store.path).parent / "reports" if state_dir else Path.cwd(), report
            )
            out.write(f"\nreport: {page}\n")
            out.flush()
            step(f"done in {time.monotonic() - started:.0f} s")
            if not exit_after_retrain:
                err.write(
                    f"serving http://{config.metrics.host}:{service.metrics_port}/metrics "
                    "(Ctrl-C or SIGTERM stops it)\n"
                )
                while not stop.wait(0.5):
                    daemon.check("serving /metrics")
            return report
        finally:
            daemon.stop()


#: The counter a demo adds to its store: a database that holds bars without it is not the demo's.
DEMO_RUNS = "demo_runs"


def _claim_store(config: Config) -> None:
    """Mark the store as the demo's; `DemoError` when it holds bars that no demo wrote (a
    database of a group of daemons), which the replay would mix with 20 years of bundled bars."""
    from daemon.store.sqlite import Store

    with Store.open(config.store) as store:
        with store.transaction("count bars", write=False) as conn:
            (bars,) = conn.execute("SELECT COUNT(*) FROM bars").fetchone()
        if bars and not store.counter(DEMO_RUNS):
            where = config.store.url or config.store.path
            raise DemoError(
                f"{where} holds {bars:,} bars that regimed demo did not write; give the demo "
                "an empty database or state directory (it replays 20 years of bundled bars "
                "into it)"
            )
        store.write_batch(counters={DEMO_RUNS: 1})


def _consume(config: Config, total: int, daemon: _Daemon, err: TextIO) -> None:
    """Wait until the daemon has stored (or dead-lettered) every replayed bar, showing it."""
    from daemon.store.sqlite import Store

    def consumed() -> int:
        with Store.open(config.store, read_only=True) as store:
            return store.counter("events_stored") + store.counter("rejected_events")

    meter = Progress(err)
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while True:
        done = consumed()
        if done >= total:
            meter.line(f"  consumed {done:,}/{total:,} bars")
            return
        meter.update(f"consumed {done:,}/{total:,} bars", done / total)
        daemon.check("consuming the replay")
        if time.monotonic() > deadline:
            meter.clear()
            raise DemoError(
                f"the daemon consumed {done:,} of {total:,} bars in {CONSUME_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.2)


def _wait(condition: Callable[[], T | None], timeout_s: float, doing: str, daemon: _Daemon) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        daemon.check(doing)
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout_s:.0f} s: {doing}")


def _write_report(directory: Path, report: RetrainReport) -> Path:
    from daemon.report.retrain_html import render_html

    path = directory / f"regimed-demo-{report.version or 'retrain'}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
