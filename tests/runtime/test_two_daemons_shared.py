"""Two `regimed run` processes of one consumer group sharing one PostgreSQL store: they split
the partitions of a numbered stream, one is SIGKILLed mid-stream, and the other takes its
partition once the session timeout has passed; every event is stored exactly once, the offsets
end at the partitions' ends, and every symbol's samples equal the offline batch path's (no
second warm-up).

The survivor leads the group (it starts first): the embedded broker cannot replace a leader
that dies, while a Kafka cluster elects a new one (docs/operations.md, "Several daemons")."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consumers.replay import publish
from daemon.config import Config
from daemon.pipeline.engine import history_rows
from daemon.store.postgres import PostgresStore
from tests.factories import numbered, wait_for, write_config

pytestmark = pytest.mark.integration

_ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


def assigned(log: Path) -> frozenset[int] | None:
    """The partitions a daemon's log says it holds now (its last assignment)."""
    found = _ASSIGNED.findall(log.read_text(errors="replace")) if log.exists() else []
    if not found:
        return None
    return frozenset(int(p) for p in found[-1].split(",") if p.strip())


def shared(config: Config, url: str, state: Path, member: str) -> Config:
    state.mkdir()
    return config.replace(
        store=dataclasses.replace(config.store, path=str(state / "regimed.db"), url=url),
        kafka=dataclasses.replace(config.kafka, group_instance_id=member, max_poll_records=50),
    )


def stored(url: str, state: Path, topic: str) -> tuple[int, dict[int, int]]:
    """The events the group stored, and the stored offsets of `topic`."""
    with PostgresStore(url, path=str(state / "x.db"), read_only=True) as store:
        return store.counter("events_stored"), store.offsets(topic)


@pytest.mark.parametrize("kafka_config", [2], indirect=True)
def test_the_survivor_takes_a_sigkilled_daemons_partition_without_gap_or_duplicate(
    kafka_config, tmp_path, postgres_url, processes
):
    n, symbols = 6000, 10
    events = numbered(n, symbols=symbols)
    first = shared(kafka_config, postgres_url, tmp_path / "a", "a")
    second = shared(kafka_config, postgres_url, tmp_path / "b", "b")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    daemons = {}

    def start(name: str, config: Config) -> None:
        path = write_config(config, tmp_path / f"{name}.toml")
        with logs[name].open("w") as stderr:
            daemons[name] = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(path)],
                env=env,
                stderr=stderr,
            )
        processes.append(daemons[name])

    topic = kafka_config.kafka.topic
    head, middle = 1000, 4000
    publish(kafka_config.kafka, events[:head], progress=False)
    # B first, so that B leads the group: the embedded broker cannot replace a leader that
    # dies (docs/operations.md, "Several daemons"); a Kafka cluster elects a new one.
    start("b", second)
    wait_for(lambda: assigned(logs["b"]) == {0, 1}, 60, "the first daemon to take both")
    start("a", first)

    def split() -> bool:
        a, b = assigned(logs["a"]), assigned(logs["b"])
        return bool(a and b and a | b == {0, 1} and not a & b)

    wait_for(split, 90, "the two daemons to split the partitions")
    wait_for(lambda: stored(postgres_url, tmp_path, topic)[0] >= head, 60, "the head stored")
    moved = assigned(logs["a"])
    assert moved
    (partition,) = moved
    publish(kafka_config.kafka, events[head:middle], progress=False)
    mark = stored(postgres_url, tmp_path, topic)[1][partition]
    wait_for(
        lambda: stored(postgres_url, tmp_path, topic)[1][partition] > mark,
        60,
        "the daemon to be killed to store some of the middle",
    )
    daemons["a"].send_signal(signal.SIGKILL)
    daemons["a"].wait(timeout=10)
    at_kill = stored(postgres_url, tmp_path, topic)[1][partition]
    assert at_kill < partition_counts(events[:middle])[partition]  # killed mid-stream
    # The session timeout (6 s), the broker's pauses in the join and the sync, a batch.
    wait_for(lambda: assigned(logs["b"]) == {0, 1}, 60, "the survivor to take the partition")
    publish(kafka_config.kafka, events[middle:], progress=False)
    wait_for(lambda: stored(postgres_url, tmp_path, topic)[0] >= n, 120, "every event stored")

    with PostgresStore(postgres_url, path=str(tmp_path / "x.db"), read_only=True) as store:
        assert store.counter("events_stored") == n  # each event processed exactly once
        bars = store.bars()
        assert sorted(int(v) for v in bars["volume"]) == list(range(n))
        offsets = store.offsets(topic)
        meta, x = store.read_samples(source="live", labelled=None)
    assert offsets == partition_counts(events)  # the next offset: the last consumed + 1
    for symbol in sorted({e.symbol for e in events}):
        frame = symbol_bars(events, symbol)
        _, batch = history_rows(first, symbol, frame, None)
        mine = (meta["symbol"] == symbol).to_numpy()
        assert list(meta.loc[mine, "ts"].dt.strftime("%Y-%m-%d")) == [s.ts for s in batch]
        np.testing.assert_allclose(
            x[mine], np.stack([s.features for s in batch]), rtol=1e-6, atol=1e-9
        )


def symbol_bars(events: list, symbol: str) -> pd.DataFrame:
    rows = [e for e in events if e.symbol == symbol]
    index = pd.DatetimeIndex([pd.Timestamp(e.day) for e in rows])
    return pd.DataFrame(
        {
            "open": [e.open for e in rows],
            "high": [e.high for e in rows],
            "low": [e.low for e in rows],
            "close": [e.close for e in rows],
            "volume": [e.volume for e in rows],
        },
        index=index,
    )


def partition_counts(events: list) -> dict[int, int]:
    """How many of `events` each of the two partitions holds: the producer's default
    partitioner (murmur2 of the key, the symbol) decides."""
    from kafka.partitioner.default import murmur2

    counts = Counter((murmur2(e.symbol.encode()) & 0x7FFFFFFF) % 2 for e in events)
    return dict(counts)
