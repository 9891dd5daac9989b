"""The daemon under everything at once: a numbered stream on three partitions, `regimed run`
killed with SIGKILL and restarted, the broker frozen for 30 s, and records of 1.05 MB, 2 MB and
10 MB between the valid bars. Afterwards every valid event is stored exactly once, every
rejected one is accounted for once, and the stored offsets are the last consumed + 1."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.broker import EmbeddedBroker
from consumers.replay import ensure_topic
from daemon.config import Config
from daemon.errors import StoreError
from daemon.store.sqlite import Store
from tests.factories import broker_config, numbered, read_topic, stored_numbers

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

N_VALID = 20_000
FREEZE_S = 30.0
MiB = 1 << 20


class Daemon:
    """`regimed run` restarted whenever it exits, as systemd's Restart= would."""

    def __init__(self, config_path: Path, log_dir: Path) -> None:
        self.command = [sys.executable, "-m", "daemon", "run", "--config", str(config_path)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []  # exit codes of runs that ended on their own

    def ensure_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.exits.append(self.proc.returncode)
            logger.warning("regimed run exited with %d: restarted", self.proc.returncode)
            self.proc = None
        if self.proc is None:
            self.starts += 1
            with open(self.log_dir / f"run-{self.starts}.log", "wb") as log:
                self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait (bounded): the exit code."""
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise

    def wait_for(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Keep the daemon running until `done()` (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout_s:.0f} s; logs in {self.log_dir}")
            self.ensure_running()
            time.sleep(0.1)


def counters(config: Config) -> dict[str, int]:
    """The store's counters (empty while the daemon has not created or migrated it)."""
    if not Path(config.store.path).exists():
        return {}
    try:
        with Store.open(config.store, read_only=True) as store:
            return store.counters()
    except StoreError:
        return {}


def stored(config: Config) -> int:
    return counters(config).get("events_stored", 0)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list[tuple]:
    """Send with a plain producer whose request limit takes 10 MB: each record's
    (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], max_request_size=16 * MiB)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(timeout=60)
        return [(m.partition, m.offset) for m in (f.get(timeout=10) for f in futures)]
    finally:
        producer.close(timeout=10)


def implausible(symbol: bytes) -> list[bytes]:
    bar = json.loads(numbered(1)[0].to_json())
    bar["symbol"] = symbol.decode()
    return [
        json.dumps({**bar, "ts": "0001-01-01"}).encode(),
        json.dumps({**bar, "high": 1e300}).encode(),
    ]


def test_kills_a_frozen_broker_and_huge_records_lose_and_duplicate_nothing(tmp_path):
    rng = random.Random(15)
    events = numbered(N_VALID, symbols=12)
    valid = [(e.symbol.encode(), e.to_json()) for e in events]
    bad = [os.urandom(1_050_000), os.urandom(2_000_000), os.urandom(10_000_000)]
    bad += implausible(b"N3")
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    assert broker.process is not None
    broker_pid = broker.process.pid
    path = tmp_path / "config.toml"
    daemon = Daemon(path, tmp_path)
    try:
        config = broker_config(broker.bootstrap, "chaos", "chaos", "chaos-member", tmp_path)
        kafka = config.kafka
        ensure_topic(kafka, kafka.topic, 3)
        ensure_topic(kafka, kafka.effective_dlq_topic, 1)
        path.write_text(config.to_toml())

        # The stream in three parts, each with oversized or implausible records inside.
        parts = [
            [*valid[:8000], (b"N1", bad[0]), *valid[8000:9000]],
            [*valid[9000:13000], (b"N2", bad[1]), *valid[13000:16000]],
            [*valid[16000:18000], (b"N0", bad[2]), (b"N3", bad[3]), *valid[18000:]],
        ]
        parts[2].insert(len(parts[2]) - 500, (b"N3", bad[4]))
        where: dict[bytes, tuple] = {}  # (partition, offset) of each rejected record
        ends: dict[int, int] = {}  # the last offset + 1 of each partition

        def send(part: list[tuple[bytes, bytes]]) -> None:
            sent = produce(broker.bootstrap, kafka.topic, part)
            for (_, value), (partition, offset) in zip(part, sent, strict=True):
                ends[partition] = max(ends.get(partition, 0), offset + 1)
                if value in bad:
                    where[value] = (partition, offset)

        send(parts[0])
        daemon.ensure_running()
        for _ in range(2):  # killed twice while catching up
            # At most the 9,000 valid events sent so far: a first run that stored most of them
            # before its kill must not leave the second a target it cannot reach.
            target = min(stored(config) + rng.randint(1000, 3000), 9000)
            daemon.wait_for(lambda t=target: stored(config) >= t, 60, f"{target} stored")
            time.sleep(rng.uniform(0, 0.3))
            daemon.kill()
            daemon.ensure_running()

        send(parts[1])
        target = stored(config) + 500
        daemon.wait_for(lambda: stored(config) >= target, 60, f"{target} stored")
        os.killpg(broker_pid, signal.SIGSTOP)  # frozen in the middle of the second part
        try:
            frozen_until = time.monotonic() + FREEZE_S
            daemon.wait_for(lambda: time.monotonic() >= frozen_until, FREEZE_S + 5, "thawed")
        finally:
            os.killpg(broker_pid, signal.SIGCONT)

        send(parts[2])
        target = stored(config) + rng.randint(500, 2000)
        daemon.wait_for(lambda: stored(config) >= target, 90, f"{target} stored")
        daemon.kill()  # once more after the freeze
        daemon.wait_for(
            lambda: stored(config) >= N_VALID and counters(config)["rejected_events"] >= len(bad),
            90,
            "the whole stream stored",
        )
        assert daemon.stop() == 0
        logger.info("%d starts; runs that exited on their own: %s", daemon.starts, daemon.exits)

        with Store.open(config.store) as store:
            assert store.counter("events_stored") == N_VALID  # each valid event once
            assert stored_numbers(store) == list(range(N_VALID))
            assert store.counter("rejected_events") == len(bad)  # each rejected one once
            parked = {(row[1], row[2]) for row in store.dead_letters()}
            assert store.counter("dead_letters_parked") == len(parked)
            offsets = store.offsets(kafka.topic)
        assert offsets == ends  # the last consumed + 1, every partition
        letters = read_topic(broker.bootstrap, kafka.effective_dlq_topic, len(bad) - len(parked))
        published = {
            (int(dict(r.headers)["source_partition"]), int(dict(r.headers)["source_offset"]))
            for r in letters
        }
        assert published | parked == set(where.values())  # every dead letter somewhere
        for r in letters:
            size = int(dict(r.headers).get("original_size", len(r.value)))
            assert len(r.value) < MiB and size in {len(b) for b in bad}
    finally:
        daemon.kill()
        os.killpg(broker_pid, signal.SIGCONT)
        broker.stop()

