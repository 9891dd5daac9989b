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
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from daemon.config import Config, StoreConfig
from daemon.errors import RegimedError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The demo's topic; a fresh broker holds nothing else.
TOPIC = "market.bars"
#: How long each wait of the demo may take before it gives up with a clear message.
CONSUME_TIMEOUT_S = 300.0
RETRAIN_TIMEOUT_S = 600.0


class DemoError(RegimedError):
    """A step of the demo did not finish."""


def demo_config(base: Config, state_dir: Path, bootstrap: str, metrics_port: int) -> Config:
    """`base` pointed at the demo's broker and state directory, with the bundled index as the
    market symbol (the bundled history has ^GSPC, not SPY)."""
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
        store=StoreConfig(path=str(state_dir / "regimed.db")),
        metrics=dataclasses.replace(base.metrics, port=metrics_port),
        regime=dataclasses.replace(base.regime, market_symbol="^GSPC"),
    )


@contextlib.contextmanager
def _state(state_dir: str | None) -> Iterator[Path]:
    if state_dir is not None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="regimed-demo-") as tmp:
        yield Path(tmp)


def run_demo(
    base: Config,
    *,
    state_dir: str | None = None,
    exit_after_retrain: bool = False,
    metrics_port: int | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the demo; the retrain report. `stop` (Ctrl-C sets it) ends the serving phase."""
    from consumers.broker import EmbeddedBroker
    from consumers.replay import bundled_events, ensure_topic, publish
    from daemon.archive import build_archive
    from daemon.service import Service
    from daemon.store import Store
    from daemon.training.summary import render

    stop = stop or threading.Event()
    started = time.monotonic()

    def step(text: str) -> None:
        err.write(f"[{time.monotonic() - started:6.1f}s] {text}\n")
        err.flush()

    port = base.metrics.port if metrics_port is None else metrics_port
    with _state(state_dir) as state, EmbeddedBroker(log_path=None) as broker:
        step(f"embedded Kafka broker on {broker.bootstrap}; state in {state}")
        config = demo_config(base, state, broker.bootstrap, port)
        ensure_topic(config.kafka, TOPIC, 1)
        ensure_topic(config.kafka, config.kafka.effective_dlq_topic, 1)
        events = bundled_events(config.regime.vix_symbol)
        step(f"replaying {len(events):,} bundled bars (S&P 500, NASDAQ 1999-2018, VIX 2014-2018)")
        publish(config.kafka, events, topic=TOPIC, total=len(events), progress=True)

        service = Service(config)
        thread = threading.Thread(target=service.run, name="regimed", daemon=False)
        thread.start()
        try:
            _wait(lambda: service.metrics_port, 60, "the daemon to start", thread)
            step(
                f"daemon running; metrics on "
                f"http://{config.metrics.host}:{service.metrics_port}/metrics"
            )
            _consume(config, len(events), thread)
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
                raise DemoError("the retrain did not start: another retrain is running")
            result = _wait(
                lambda: retrains.results[0] if retrains.results else None,
                RETRAIN_TIMEOUT_S,
                "the retrain",
                thread,
            )
            report = result.report or {}
            if result.outcome not in ("promoted", "rejected"):
                raise DemoError(f"the retrain {result.outcome}: {result.reason}")
            out.write("\n" + render(report))
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
                    "(Ctrl-C to stop)\n"
                )
                while not stop.wait(0.5) and thread.is_alive():
                    pass
            return report
        finally:
            service.request_stop()
            thread.join(timeout=60)


def _consume(config: Config, total: int, thread: threading.Thread) -> None:
    """Wait until the daemon has stored (or dead-lettered) every replayed bar, showing it."""
    from daemon.store import Store

    def consumed() -> int:
        with Store.open(config.store, read_only=True) as store:
            return store.counter("events_stored") + store.counter("rejected_events")

    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    shown = -1.0
    while True:
        done = consumed()
        now = time.monotonic()
        if now - shown >= 1.0 or done >= total:
            sys.stderr.write(f"\r  consumed {done:,}/{total:,} bars")
            sys.stderr.flush()
            shown = now
        if done >= total:
            sys.stderr.write("\n")
            return
        if not thread.is_alive():
            raise DemoError("the daemon stopped while consuming the replay (see the log)")
        if now > deadline:
            raise DemoError(
                f"the daemon consumed {done:,} of {total:,} bars in {CONSUME_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.2)


def _wait(
    condition: Callable[[], T | None], timeout_s: float, what: str, thread: threading.Thread
) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if not thread.is_alive():
            raise DemoError(f"the daemon stopped while waiting for {what} (see the log)")
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _write_report(directory: Path, report: dict[str, Any]) -> Path:
    from daemon.training.html_report import render_html

    path = directory / f"regimed-demo-{report.get('version', 'retrain')}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
