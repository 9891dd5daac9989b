"""Live ingest against the real embedded broker: exactly once, dead letters, clean stops."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import strategies as st

from consumers.events import REASONS, decode_event
from consumers.replay import bundled_events, publish
from daemon.config import Config
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.errors import EventRejected
from daemon.monitor.metrics import Metrics
from daemon.pipeline.engine import history_rows
from daemon.runtime.ingest import ingest_consumer
from daemon.store.sqlite import Store
from tests.factories import events_stored, numbered, stored_numbers, write_config

pytestmark = pytest.mark.integration


def consume(config: Config, until: int, timeout_s: float = 90) -> tuple[int, Metrics]:
    """Consume in-process until `until` records are consumed (bounded by timeout_s)."""
    metrics = Metrics.create()
    stop = threading.Event()
    with Store.open(config.store) as store:
        consumer = ingest_consumer(config, store, metrics, stop)
        consumer.open()
        total = 0
        deadline = time.monotonic() + timeout_s
        try:
            while total < until and time.monotonic() < deadline:
                total += consumer.run(max_messages=until - total, timeout_s=2).consumed
        finally:
            consumer.close(commit=True)
    return total, metrics


def test_bundled_history_through_kafka_equals_the_batch_path(kafka_config):
    events = [e for e in bundled_events() if e.symbol in ("^GSPC", "^VIX")]
    publish(kafka_config.kafka, events, progress=False)
    consumed, metrics = consume(kafka_config, len(events), timeout_s=180)
    assert consumed == len(events)

    bars = read_bars_csv(bundled_path("sp500"))
    vix = read_vix_csv(bundled_path("vix"))
    batch_bars, batch_samples = history_rows(kafka_config, "^GSPC", bars, vix)
    with Store.open(kafka_config.store) as store:
        stored = store.bars(symbol="^GSPC")
        regimes = [None if r != r else r for r in stored["regime"].astype(object)]
        assert regimes == [b.regime for b in batch_bars]
        assert list(stored["vix_source"].astype(object)) == [b.vix_source for b in batch_bars]
        meta, x = store.read_samples(source="live", labelled=None)
        assert store.offsets(kafka_config.kafka.topic) == {0: len(events)}
    assert len(meta) == len(batch_samples)
    np.testing.assert_allclose(
        x, np.stack([s.features for s in batch_samples]), rtol=1e-6, atol=1e-9
    )
    labels = [None if pd.isna(v) else int(v) for v in meta["label"]]
    assert labels == [s.label for s in batch_samples]
    value = metrics.registry.get_sample_value
    assert value("regimed_events_consumed_total", {"topic": kafka_config.kafka.topic}) == len(
        events
    )
    crash = value("regimed_bars_labeled_total", {"regime": "crash"})
    assert crash == sum(1 for b in batch_bars if b.regime == "crash")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_of_every_kafka_codec_are_consumed(kafka_config, codec):
    """Producers in the field compress; the daemon ships every codec kafka-python reads."""
    from kafka import KafkaProducer

    from consumers._client import client_options

    n = 300
    producer = KafkaProducer(**client_options(kafka_config.kafka), compression_type=codec)
    try:
        for event in numbered(n):
            producer.send(
                kafka_config.kafka.topic, key=event.symbol.encode(), value=event.to_json()
            )
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    consumed, metrics = consume(kafka_config, n, timeout_s=60)
    assert consumed == n
    rejected = metrics.events_rejected.collect()[0].samples
    assert sum(s.value for s in rejected if s.name.endswith("_total")) == 0
    with Store.open(kafka_config.store) as store:
        assert stored_numbers(store) == list(range(n))


def test_sigkill_at_random_points_loses_and_duplicates_nothing(kafka_config, tmp_path, processes):
    # The stream grows by one chunk before each start, so all 20 kills land while there is
    # work in flight however fast the machine is, and what is left at the end stays small.
    kills_wanted, step = 20, 1500
    events = numbered(kills_wanted * step)
    n = len(events)
    config = kafka_config.replace(
        kafka=kafka_config.kafka.__class__(
            **{**kafka_config.kafka.__dict__, "max_poll_records": 200}
        )
    )
    path = write_config(config, tmp_path / "config.toml")
    rng = random.Random(7)
    kills = 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(path)]
    progress = 0
    deadline = time.monotonic() + 420
    while kills < kills_wanted and time.monotonic() < deadline:
        publish(config.kafka, events[kills * step : (kills + 1) * step], progress=False)
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        processes.append(proc)
        try:
            # Let it store something new, then kill it at a random moment.
            target = progress + 1
            while time.monotonic() < deadline:
                progress = max(progress, events_stored(config))
                if progress >= target:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        kills += 1
    assert kills == kills_wanted, f"only {kills} kills in the time allowed"
    finish = time.monotonic() + 300
    while events_stored(config) < n and time.monotonic() < finish:
        consume(config, n - events_stored(config), timeout_s=30)
    with Store.open(config.store) as store:
        assert store.counter("events_stored") == n  # each event processed exactly once
        assert stored_numbers(store) == list(range(n))
        assert store.offsets(config.kafka.topic) == {0: n}
        integrity = store._conn.execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"


@pytest.mark.parametrize("kafka_config", [2], indirect=True)
def test_two_daemons_split_partitions_and_hand_over_without_gap_or_duplicate(
    kafka_config, tmp_path
):
    n = 4000
    k = kafka_config.kafka
    first = kafka_config.replace(
        store=kafka_config.store.__class__(path=str(tmp_path / "a.db")),
        kafka=k.__class__(**{**k.__dict__, "group_instance_id": "a", "max_poll_records": 50}),
    )
    second = kafka_config.replace(
        store=kafka_config.store.__class__(path=str(tmp_path / "b.db")),
        kafka=k.__class__(**{**k.__dict__, "group_instance_id": "b", "max_poll_records": 50}),
    )
    publish(k, numbered(n, symbols=40), progress=False)
    stop_a, stop_b = threading.Event(), threading.Event()
    held: dict[str, frozenset[int]] = {}

    def run(name: str, config: Config, stop: threading.Event) -> None:
        with Store.open(config.store) as store:
            consumer = ingest_consumer(config, store, Metrics.create(), stop)
            consumer.open()
            clean = False
            try:
                while not stop.is_set():
                    consumer.run(timeout_s=0.5)
                    held[name] = consumer.partitions()
                clean = True
            finally:
                consumer.close(commit=clean)

    a = threading.Thread(target=run, args=("a", first, stop_a))
    b = threading.Thread(target=run, args=("b", second, stop_b))
    a.start()
    b.start()
    try:
        handed_over(first, second, held, stop_a, a, n)
    finally:
        stop_a.set()
        stop_b.set()
        a.join(timeout=30)
        b.join(timeout=30)
    with Store.open(first.store) as sa, Store.open(second.store) as sb:
        numbers = stored_numbers(sa) + stored_numbers(sb)
        assert sa.counter("events_stored") > 0
        assert sb.counter("events_stored") > 0
        assert sa.counter("events_stored") + sb.counter("events_stored") == n
    assert sorted(numbers) == list(range(n))


def handed_over(
    first: Config,
    second: Config,
    held: dict[str, frozenset[int]],
    stop_a: threading.Event,
    a: threading.Thread,
    n: int,
) -> None:
    """Stop A once both daemons hold one partition each and have stored something, then wait
    until B has taken over and everything is stored.

    Stopping A only after the split has settled matters on the embedded broker: it leaves a
    group wedged when its leader goes away while a join is pending (docs/operations.md). A
    Kafka cluster elects a new leader instead.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        one, other = held.get("a", frozenset()), held.get("b", frozenset())
        split = one and other and one | other == {0, 1} and not one & other
        if split and events_stored(first) and events_stored(second):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the two daemons never split the partitions: {held}")
    stop_a.set()
    a.join(timeout=30)
    assert not a.is_alive()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if events_stored(first) + events_stored(second) >= n:
            break
        time.sleep(0.2)


hostile = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["symbol", "ts", "open", "high", "low", "close", "volume", "x"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
            max_size=8,
        ),
    ),
)


def hostile_sample(n: int) -> list[bytes]:
    """n payloads drawn from the hostile strategy (the same one the unit tests use for
    decode_event); drawn outside @given because one broker round trip must carry them all."""
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        return [hostile.example() for _ in range(n)]


def test_hostile_payloads_land_in_the_dlq_and_valid_events_around_them_are_stored(kafka_config):
    payloads = hostile_sample(3000)
    from kafka import KafkaConsumer, KafkaProducer

    config = kafka_config
    topic = config.kafka.topic + f"-{random.getrandbits(32):08x}"
    config = config.replace(
        kafka=config.kafka.__class__(**{**config.kafka.__dict__, "topic": topic})
    )
    from consumers.replay import ensure_topic

    ensure_topic(config.kafka, topic, 1)
    ensure_topic(config.kafka, config.kafka.effective_dlq_topic, 1)
    valid = numbered(len(payloads))
    expected_reasons = []
    producer = KafkaProducer(bootstrap_servers=list(config.kafka.bootstrap_servers))
    for good, bad in zip(valid, payloads, strict=True):
        producer.send(topic, key=good.symbol.encode(), value=good.to_json())
        producer.send(topic, key=b"X", value=bad)
        try:
            decode_event(bad, b"X")
            expected_reasons.append(None)
        except EventRejected as exc:
            expected_reasons.append(exc.reason)
    producer.flush()
    producer.close()
    consumed, metrics = consume(config, 2 * len(payloads), timeout_s=120)
    assert consumed == 2 * len(payloads)
    rejected = [r for r in expected_reasons if r is not None]
    with Store.open(config.store) as store:
        assert store.counter("rejected_events") == len(rejected)
        numbers = set(stored_numbers(store))
    assert set(range(len(valid))) <= numbers
    dlq = KafkaConsumer(
        config.kafka.effective_dlq_topic,
        bootstrap_servers=list(config.kafka.bootstrap_servers),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    letters = list(dlq)
    dlq.close()
    assert [dict(r.headers)["reason"].decode() for r in letters] == rejected
    assert all(dict(r.headers)["reason"].decode() in REASONS for r in letters)
    bad_bytes = [p for p, r in zip(payloads, expected_reasons, strict=True) if r is not None]
    assert [r.value for r in letters] == bad_bytes
    for reason in set(rejected):
        assert metrics.registry.get_sample_value(
            "regimed_events_rejected_total", {"reason": reason}
        ) == rejected.count(reason)


def test_sigterm_stops_cleanly_and_a_killed_daemon_is_back_within_15s(
    kafka_config, tmp_path, processes
):
    n = 2000
    publish(kafka_config.kafka, numbered(n), progress=False)
    path = write_config(kafka_config, tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(path)]

    def wait_for_progress(proc, at_least: int, timeout_s: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            assert proc.poll() is None
            if events_stored(kafka_config) >= at_least:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"no progress to {at_least} within {timeout_s}s")

    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    processes.append(proc)
    wait_for_progress(proc, n, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    publish(kafka_config.kafka, numbered(n + 1000)[n:], progress=False)
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    processes.append(proc)
    back = wait_for_progress(proc, n + 1, 30)
    logging.getLogger(__name__).info("consuming again %.1f s after the restart", back)
    assert back < 15, f"consuming again only after {back:.1f}s"
    wait_for_progress(proc, n + 1000, 60)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "regimed stopped" in err


def test_metrics_endpoint_serves_ingest_metrics(kafka_config):
    import urllib.request

    from daemon.runtime.service import Service

    publish(kafka_config.kafka, numbered(50), progress=False)
    service = Service(kafka_config)
    seen: dict[str, str] = {}

    def scrape_when_done() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not service.stop_event.is_set():
            port = getattr(service, "metrics_port", None)
            if port:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
                if 'regimed_events_consumed_total{topic="' in text and " 50.0" in text:
                    seen["text"] = text
                    service.request_stop()
                    return
            time.sleep(0.2)
        service.request_stop()

    scraper = threading.Thread(target=scrape_when_done)
    scraper.start()
    service.run(timeout_s=60)
    scraper.join(timeout=10)
    text = seen["text"]
    for name in (
        "regimed_events_consumed_total",
        "regimed_consumer_lag_messages",
        "regimed_samples_stored",
        "regimed_market_regime",
        "regimed_vix_proxy_in_use",
        "regimed_bars_labeled_total",
    ):
        assert name in text, name
    assert service.state.value == "stopped"
