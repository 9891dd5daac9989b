"""Dead letters whatever the record's size and whatever the state of the dead-letter topic:
bounded copies of oversized records, retries, and letters parked in the store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import threading
import time

import pytest

from consumers.broker import EmbeddedBroker
from consumers.dlq import FRAMING_BYTES, MAX_KEY_BYTES, DeadLetter, DeadLetters
from consumers.replay import ensure_topic
from daemon.config import Config
from daemon.errors import EventRejected
from daemon.monitor.metrics import Metrics
from daemon.runtime.ingest import ingest_consumer
from daemon.store.sqlite import Store
from tests.factories import numbered, read_topic, stored_numbers

MiB = 1 << 20
#: The record sizes of the issue: just over Kafka's default limit, twice it, ten times it.
OVERSIZED = (1_050_000, 2_000_000, 10_000_000)


@dataclasses.dataclass
class Record:
    """The fields of a consumed record that a dead letter reads."""

    topic: str = "market.bars"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"SPY"
    value: bytes | None = b"{}"


def letter(value: bytes, key: bytes | None = b"SPY") -> DeadLetter:
    return DeadLetter.of(Record(key=key, value=value), EventRejected("too_large", "big"))


def headers(letter: DeadLetter) -> dict[str, bytes]:
    return dict(letter.headers)


# --- bounded copies, without a broker ---------------------------------------------------------


def test_a_letter_that_fits_is_sent_whole():
    whole = letter(b"x" * 1000)
    assert whole.bounded(MiB) is whole
    assert headers(whole)["reason"] == b"too_large"
    assert (headers(whole)["source_partition"], headers(whole)["source_offset"]) == (b"2", b"41")
    assert "truncated" not in headers(whole)


@pytest.mark.parametrize("size", OVERSIZED)
def test_an_oversized_letter_becomes_a_bounded_copy_with_the_originals_size_and_hash(size):
    value = os.urandom(size)
    copy = letter(value).bounded(MiB)
    assert copy.size + FRAMING_BYTES <= MiB
    assert copy.size > MiB - 2 * FRAMING_BYTES  # as much of the value as fits
    assert value.startswith(copy.value) and copy.key == b"SPY"
    found = headers(copy)
    assert found["truncated"] == b"true"
    assert found["original_size"] == str(size).encode()
    assert found["original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert found["reason"] == b"too_large" and found["source_offset"] == b"41"
    smaller = copy.bounded(copy.size // 2)
    assert smaller.size + FRAMING_BYTES <= copy.size // 2
    assert dict(smaller.headers) == found  # still the original's size and hash
    assert value.startswith(smaller.value)


def test_an_oversized_key_is_cut_too_and_a_tombstone_is_an_empty_letter():
    copy = letter(b"v" * 100, key=b"k" * (2 * MiB)).bounded(MiB)
    assert copy.key == b"k" * MAX_KEY_BYTES and copy.value == b"v" * 100
    assert headers(copy)["original_key_size"] == str(2 * MiB).encode()
    tombstone = DeadLetter.of(Record(value=None), EventRejected("not_json", "empty"))
    assert tombstone.value == b"" and tombstone.bounded(MiB) is tombstone


def test_a_letter_the_brokers_refuse_as_too_large_is_sent_again_at_half_the_size():
    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    from consumers.dlq import _smaller

    whole = letter(b"x" * 600_000)
    half = _smaller(whole, MessageSizeTooLargeError())
    assert half.size <= whole.size // 2 and headers(half)["original_size"] == b"600000"
    assert _smaller(whole, KafkaTimeoutError()) is whole  # not a question of size


def test_a_letter_as_a_stored_row():
    row = letter(b"x" * (2 * MiB)).bounded(MiB).row("2026-12-06T20:00:00+00:00")
    topic, partition, offset, reason, key, value, header_json, at = row
    assert (topic, partition, offset, reason, key) == ("market.bars", 2, 41, "too_large", b"SPY")
    assert len(value) < MiB and at.startswith("2026-12-06")
    assert dict(json.loads(header_json))["original_size"] == str(2 * MiB)


def test_the_events_section_bounds_the_letters():
    from daemon.config import parse_config

    config = parse_config("[events]\ndead_letter_max_bytes = 65536\n")
    assert config.events.dead_letter_max_bytes == 65536
    with pytest.raises(Exception, match=r"events\.dead_letter_max_bytes = 100: expected"):
        parse_config("[events]\ndead_letter_max_bytes = 100\n")


def test_every_reason_is_exported_from_start_up():
    value = Metrics.create().registry.get_sample_value
    for reason in ("too_large", "ts_before_min_date", "price_above_max"):
        assert value("regimed_events_rejected_total", {"reason": reason}) == 0.0


# --- against the real embedded broker ---------------------------------------------------------


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send records with a plain producer whose request limit takes the largest of them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=[bootstrap], max_request_size=16 * MiB)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def interleaved(n_valid: int, bad: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    """`n_valid` numbered bars with the `bad` records spread between them."""
    records: list[tuple[bytes | None, bytes]] = [
        (e.symbol.encode(), e.to_json()) for e in numbered(n_valid)
    ]
    step = n_valid // (len(bad) + 1)
    for k, value in reversed(list(enumerate(bad, start=1))):
        records.insert(k * step, (b"N0", value))
    return records


def consume_all(config: Config, n: int, dlq: DeadLetters | None = None) -> Metrics:
    """Consume `n` records in-process (bounded), with `dlq` as the dead-letter producer."""
    metrics = Metrics.create()
    stop = threading.Event()
    with Store.open(config.store) as store:
        consumer = ingest_consumer(config, store, metrics, stop)
        if dlq is not None:
            consumer.dlq = dlq
        consumer.open()
        total = 0
        deadline = time.monotonic() + 90
        try:
            while total < n and time.monotonic() < deadline:
                total += consumer.run(max_messages=n - total, timeout_s=2).consumed
        finally:
            consumer.close(commit=True)
    assert total == n
    return metrics


@pytest.mark.integration
def test_oversized_records_are_dead_lettered_as_bounded_copies_and_the_stream_goes_on(
    kafka_config,
):
    bad = [os.urandom(size) for size in OVERSIZED]
    records = interleaved(400, bad)
    k = kafka_config.kafka
    produce(k.bootstrap_servers[0], k.topic, records)
    metrics = consume_all(kafka_config, len(records))
    with Store.open(kafka_config.store) as store:
        assert stored_numbers(store) == list(range(400))
        assert store.counter("rejected_events") == 3
        assert store.counter("dead_letters_parked") == 0 and store.dead_letters() == []
        assert store.offsets(k.topic) == {0: len(records)}
    letters = read_topic(k.bootstrap_servers[0], k.effective_dlq_topic, 3)
    assert len(letters) == 3
    offsets = [i for i, (_, value) in enumerate(records) if value in bad]
    for got, value, offset in zip(letters, bad, offsets, strict=True):
        found = dict(got.headers)
        assert found["reason"] == b"too_large"
        assert found["original_size"] == str(len(value)).encode()
        assert found["original_sha256"] == hashlib.sha256(value).hexdigest().encode()
        assert (found["source_partition"], found["source_offset"]) == (b"0", str(offset).encode())
        assert value.startswith(got.value) and MiB // 2 < len(got.value) < MiB
    value = metrics.registry.get_sample_value
    assert value("regimed_events_rejected_total", {"reason": "too_large"}) == 3
    assert value("regimed_dead_letters_parked_total") == 0


def implausible() -> list[bytes]:
    """Bars with a timestamp in year 0001 and a price of 1e300, and a valid one after them."""
    good = numbered(1)[0]
    bar = json.loads(good.to_json())
    return [
        json.dumps({**bar, "ts": "0001-01-01"}).encode(),
        json.dumps({**bar, "high": 1e300}).encode(),
    ]


@pytest.fixture
def dlq_broker(tmp_path):
    """A broker of its own for the dead-letter topic, so that it can be frozen."""
    broker = EmbeddedBroker(log_path=tmp_path / "dlq-broker.log").start()
    try:
        yield broker
    finally:
        if broker.process is not None:
            os.killpg(broker.process.pid, signal.SIGCONT)
        broker.stop()


def freeze(broker: EmbeddedBroker) -> int:
    """SIGSTOP the broker (the fixture resumes it): its pid. A frozen broker, unlike a stopped
    one, keeps accepting connections, which kafka-python 3.0 leaks when they are refused."""
    assert broker.process is not None
    os.killpg(broker.process.pid, signal.SIGSTOP)
    return broker.process.pid


def dlq_on(config: Config, broker: EmbeddedBroker, retry_s: float) -> tuple[Config, DeadLetters]:
    """The config with `retry_s` for dead letters, and a dead-letter producer on `broker`."""
    events = dataclasses.replace(config.events, dead_letter_retry_seconds=retry_s)
    kafka = dataclasses.replace(config.kafka, bootstrap_servers=(broker.bootstrap,))
    ensure_topic(kafka, kafka.effective_dlq_topic, 1)
    config = config.replace(events=events)
    return config, DeadLetters(kafka, events, threading.Event())


@pytest.mark.integration
def test_a_dead_letter_topic_that_does_not_answer_parks_the_letters_in_the_store(
    kafka_config, dlq_broker
):
    config, dlq = dlq_on(kafka_config, dlq_broker, retry_s=3)
    bad = [os.urandom(2_000_000), *implausible()]
    records = interleaved(200, bad)
    k = config.kafka
    produce(k.bootstrap_servers[0], k.topic, records)
    dlq.open()
    freeze(dlq_broker)  # the dead-letter brokers stop answering after the daemon started
    metrics = consume_all(config, len(records), dlq)
    offsets = [i for i, (_, value) in enumerate(records) if value in bad]
    with Store.open(config.store) as store:
        assert stored_numbers(store) == list(range(200))
        assert store.counter("rejected_events") == 3
        assert store.counter("dead_letters_parked") == 3
        assert store.offsets(k.topic) == {0: len(records)}
        parked = store.dead_letters()
    assert [(row[0], row[1], row[2], row[3]) for row in parked] == [
        (k.topic, 0, offsets[0], "too_large"),
        (k.topic, 0, offsets[1], "ts_before_min_date"),
        (k.topic, 0, offsets[2], "price_above_max"),
    ]
    big = dict(json.loads(parked[0][6]))
    assert big["original_sha256"] == hashlib.sha256(bad[0]).hexdigest()
    assert bad[0].startswith(parked[0][5]) and len(parked[0][5]) < MiB
    assert [row[5] for row in parked[1:]] == bad[1:]  # small letters whole
    value = metrics.registry.get_sample_value
    for reason in ("too_large", "ts_before_min_date", "price_above_max"):
        assert value("regimed_events_rejected_total", {"reason": reason}) == 1
    assert value("regimed_dead_letters_parked_total") == 3


@pytest.mark.integration
def test_a_frozen_dead_letter_topic_is_retried_until_it_takes_the_letters(
    kafka_config, dlq_broker
):
    config, dlq = dlq_on(kafka_config, dlq_broker, retry_s=60)
    bad = implausible()
    records = interleaved(100, bad)
    produce(config.kafka.bootstrap_servers[0], config.kafka.topic, records)
    dlq.open()
    pid = freeze(dlq_broker)
    thaw = threading.Timer(4.0, os.killpg, (pid, signal.SIGCONT))
    thaw.start()
    try:
        consume_all(config, len(records), dlq)
    finally:
        thaw.cancel()
        os.killpg(pid, signal.SIGCONT)
    with Store.open(config.store) as store:
        assert store.counter("rejected_events") == 2
        assert store.dead_letters() == []
    letters = read_topic(dlq_broker.bootstrap, config.kafka.effective_dlq_topic, 2)
    assert {dict(r.headers)["source_offset"] for r in letters} == {
        str(i).encode() for i, (_, value) in enumerate(records) if value in bad
    }
    assert {r.value for r in letters} == set(bad)


@pytest.mark.integration
def test_a_stop_during_the_retries_parks_the_letters_at_once(kafka_config, dlq_broker):
    _, dlq = dlq_on(kafka_config, dlq_broker, retry_s=600)
    dlq.open()
    freeze(dlq_broker)
    for offset in range(50):
        dlq.send(Record(offset=offset), EventRejected("not_json", "empty"))
    result: list[list[DeadLetter]] = []
    flushing = threading.Thread(target=lambda: result.append(dlq.flush()))
    flushing.start()
    threading.Timer(1.0, dlq.stop.set).start()
    flushing.join(timeout=60)  # far below the 600 s of retries: the stop cut them short
    dlq.close()
    assert not flushing.is_alive()
    assert [letter.source_offset for letter in result[0]] == list(range(50))
