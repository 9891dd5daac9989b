"""The output topics against the real embedded broker: a champion scores a stream while
`regimed run` is killed with SIGKILL again and again; afterwards every stored prediction is on
the predictions topic and every stored bar on the regimes topic, each copy of a record
identical to the others, and a full outbox pauses polling until the output broker is back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from consumers.broker import EmbeddedBroker
from consumers.outputs import OutputProducer
from consumers.replay import bundled_events, ensure_topic, publish
from daemon.config import Config, OutputsConfig
from daemon.errors import OutputError, StoreError
from daemon.pipeline.features import FEATURE_NAMES
from daemon.pipeline.features.defs import FEATURE_VERSION
from daemon.registry.ensemble import SoftVote
from daemon.registry.versions import Registry
from daemon.store.outbox import Outbox, OutboxRecord
from daemon.store.sqlite import Store
from tests.factories import Running, numbered, scrape

pytestmark = pytest.mark.integration

#: At least ten; each restart waits some 6 s for the group to take the new member back.
KILLS = 10


def with_champion(config: Config) -> str:
    """A small logistic regression on random rows of the live feature layout, promoted."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(np.int8)
    model = LogisticRegression().fit(X, y)
    with Store.open(config.store) as store:
        Registry(store).register(
            "v1",
            {"logistic_regression": model},
            trained_at=dt.datetime(2024, 1, 6, tzinfo=dt.UTC),
            trigger="manual",
            data_window=("2000-01-03", "2013-12-31"),
            sample_counts={"live": {"normal": 300}},
            meta={
                "feature_version": FEATURE_VERSION,
                "vote": SoftVote({"logistic_regression": 1.0}).as_dict(),
            },
            promote_reason="test champion",
        )
    return "v1"


def output_config(kafka_config: Config, tag: str) -> Config:
    """Fresh output topics (one partition each) beside the test's input topic."""
    base = kafka_config.kafka.topic
    outputs = OutputsConfig(predictions_topic=f"{base}.{tag}.p", regimes_topic=f"{base}.{tag}.r")
    for topic in (outputs.predictions_topic, outputs.regimes_topic):
        ensure_topic(kafka_config.kafka, topic, 1)
    return kafka_config.replace(outputs=outputs)


def read_all(
    bootstrap: str, topic: str, timeout_s: float = 60, partition: int = 0
) -> list[tuple[bytes, bytes]]:
    """Every record of a topic's partition, (key, value), up to its end offset now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"{topic}: {len(records)} of {end} read"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((r.key, r.value) for r in batch)
        # The embedded broker reports the end offset as the last batch's base offset + 1 (300
        # records in three batches of 100: 201), so the last batch lies past `end`: read on
        # until two seconds bring nothing more.
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, f"{topic}: {len(records)} read, still growing"
            polled = consumer.poll(timeout_ms=500)
            for batch in polled.values():
                records.extend((r.key, r.value) for r in batch)
            if polled:
                quiet_until = time.monotonic() + 2.0
        return records
    finally:
        consumer.close()


def by_row(records: list[tuple[bytes, bytes]]) -> dict[tuple[str, str], set[bytes]]:
    """The distinct values sent for each (symbol, ts); the key must be the symbol."""
    values: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for key, value in records:
        doc = json.loads(value)
        assert key == doc["symbol"].encode()
        values[(doc["symbol"], doc["ts"])].add(value)
    return values


def outbox_state(config: Config) -> tuple[int, int]:
    """(events stored, outbox records pending); zeros before the daemon made the store."""
    if not Path(config.store.path).exists():
        return 0, 0
    try:
        with Store.open(config.store, read_only=True) as store:
            return store.counter("events_stored"), Outbox(store).pending()
    except StoreError:
        return 0, 0


def start(path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    command = [sys.executable, "-m", "daemon", "run", "--config", str(path)]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


def wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s"
        time.sleep(0.05)


def settled(read, timeout_s: float, what: str) -> int:
    """`read()` once two readings a second apart agree (bounded)."""
    deadline = time.monotonic() + timeout_s
    last = read()
    while True:
        time.sleep(1.0)
        now = read()
        if now == last:
            return now
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s"
        last = now


def test_sigkills_lose_no_output_record_and_resend_only_identical_copies(
    kafka_config, broker, tmp_path
):
    config = output_config(kafka_config, "kill")
    config = config.replace(kafka=dataclasses.replace(config.kafka, max_poll_records=40))
    with_champion(config)
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    log = tmp_path / "runs.log"
    events = [e for e in bundled_events() if "2014-01-01" <= str(e.ts) <= "2016-12-31"]
    parts = np.array_split(np.arange(len(events)), KILLS)
    rng = random.Random(17)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for part in parts:  # each run gets new bars, and is killed while storing/publishing
            publish(config.kafka, [events[i] for i in part], progress=False)
            before = outbox_state(config)[0]
            proc = start(path, log)
            procs.append(proc)
            wait(lambda b=before: outbox_state(config)[0] > b, 60, "a new batch stored")
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        proc = start(path, log)  # the last run drains the stream and the outbox
        procs.append(proc)
        wait(lambda: outbox_state(config) == (len(events), 0), 120, "everything published")
        # The last killed run may have published everything already: the last run's start-up
        # (imports, store checks) is what is waited for here, slow on a loaded machine.
        wait(lambda: log.read_text().count("regimed running") > KILLS, 120, "the last run up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    with (
        Store.open(config.store, read_only=True) as store,
        store.transaction("read", write=False) as conn,
    ):
        predictions = conn.execute(
            "SELECT symbol, ts, model_version, proba, prediction, regime FROM predictions"
        ).fetchall()
        bars = conn.execute("SELECT symbol, ts, regime, vix, vix_source FROM bars").fetchall()
    assert len(bars) == len(events)
    assert len(predictions) > 500  # the champion scored most of the stream

    records = read_all(broker.bootstrap, config.outputs.predictions_topic)
    sent = by_row(records)
    logging.getLogger(__name__).info(
        "predictions topic: %d records for %d rows (copies sent again after a kill: %d)",
        len(records),
        len(sent),
        len(records) - len(sent),
    )
    assert {k: len(v) for k, v in sent.items() if len(v) > 1} == {}  # copies are identical
    assert set(sent) == {(s, t) for s, t, *_ in predictions}  # none lost, none extra
    for symbol, ts, version, proba, prediction, regime in predictions:
        doc = json.loads(next(iter(sent[(symbol, ts)])))
        assert doc == {
            "symbol": symbol,
            "ts": ts,
            "regime": regime,
            "target": "direction",
            "probability": proba,
            "prediction": prediction,
            "model_version": version,
            "horizon_bars": config.label.horizon_bars,
        }

    regimes = by_row(read_all(broker.bootstrap, config.outputs.regimes_topic))
    assert {k: len(v) for k, v in regimes.items() if len(v) > 1} == {}
    assert {k: json.loads(next(iter(v))) for k, v in regimes.items()} == {
        (s, t): {"symbol": s, "ts": t, "regime": r, "vix": v, "vix_source": src}
        for s, t, r, v, src in bars
    }


def test_a_full_outbox_pauses_polling_until_the_output_broker_is_back(
    kafka_config, tmp_path, caplog
):
    """The output topic on a second broker, frozen with SIGSTOP: the outbox fills to
    `outputs.max_pending`, polling pauses (log, /healthz, gauge), and after SIGCONT every bar
    is stored and published."""
    caplog.set_level(logging.INFO)
    n, limit = 400, 60
    with EmbeddedBroker(log_path=tmp_path / "out-broker.log") as out_broker:
        assert out_broker.process is not None
        frozen = out_broker.process.pid
        outputs = OutputsConfig(
            bootstrap_servers=(out_broker.bootstrap,),
            predictions_topic="",
            regimes_topic="paused.regimes",
            max_pending=limit,
            publish_batch_records=20,
        )
        kafka = dataclasses.replace(kafka_config.kafka, max_poll_records=20)
        ensure_topic(
            dataclasses.replace(kafka, bootstrap_servers=outputs.bootstrap_servers),
            outputs.regimes_topic,
            1,
        )
        config = kafka_config.replace(outputs=outputs, kafka=kafka)
        publish(config.kafka, numbered(n), progress=False)
        os.killpg(frozen, signal.SIGSTOP)
        try:
            with Running(config) as service:
                wait(lambda: "outbox full" in scrape(service, "/healthz")[1], 90, "polling paused")
                status, reason = scrape(service, "/healthz")
                assert status == 503
                assert reason.startswith("polling paused: outbox full: ")
                assert "outputs.max_pending = 60" in reason
                gauge = service.metrics.registry.get_sample_value
                assert gauge("regimed_outbox_pending_records") >= limit
                # A batch polled before the pause may still be in the writer's hands: taken
                # before the pause, it is stored after it. Wait until the store is still.
                stored_then = settled(lambda: outbox_state(config)[0], 60, "the store still")
                time.sleep(3)  # paused: nothing more is taken while the broker is frozen
                assert outbox_state(config)[0] == stored_then < n
                os.killpg(frozen, signal.SIGCONT)
                wait(lambda: outbox_state(config) == (n, 0), 120, "all stored and published")
                wait(lambda: scrape(service, "/healthz")[0] == 200, 30, "healthy again")
                assert gauge("regimed_outbox_pending_records") == 0
        finally:
            os.killpg(frozen, signal.SIGCONT)
        sent = by_row(read_all(out_broker.bootstrap, outputs.regimes_topic))
    assert len(sent) == n
    assert {k: len(v) for k, v in sent.items() if len(v) > 1} == {}
    log = [r.getMessage() for r in caplog.records if r.name == "consumers.kafka_source"]
    pauses = [m for m in log if m.startswith("polling paused: outbox full")]
    assert 1 <= len(pauses) == log.count("polling resumed")


def test_records_land_on_the_partition_the_default_partitioner_chooses(kafka_config, broker):
    """The producer computes each key's partition once (murmur2, as Kafka's default
    partitioner does): a plain keyed producer puts the same keys on the same partitions."""
    from kafka import KafkaProducer

    topic = f"{kafka_config.kafka.topic}.keyed"
    ensure_topic(kafka_config.kafka, topic, 3)
    keys = [f"SYM{k}".encode() for k in range(40)]
    producer = OutputProducer(kafka_config.kafka)
    try:
        producer.send([OutboxRecord(k, topic, key, b"{}") for k, key in enumerate(keys)])
    finally:
        producer.close()
    plain = KafkaProducer(bootstrap_servers=[broker.bootstrap])
    try:
        expected = {key: plain.send(topic, key=key, value=b"").get(timeout=10).partition
                    for key in keys}  # fmt: skip
    finally:
        plain.close(timeout=10)
    assert len(set(expected.values())) == 3  # the keys spread over every partition
    got = {}
    for partition in range(3):
        for key, value in read_all(broker.bootstrap, topic, partition=partition):
            if value == b"{}":
                got[key] = partition
    assert got == expected


def test_records_not_acknowledged_by_a_frozen_broker_raise_and_go_out_once_it_is_back(
    kafka_config, tmp_path
):
    """The producer against a second broker frozen with SIGSTOP: `send` raises OutputError
    naming the broker within its timeout (sooner when asked to stop); after SIGCONT the same
    records are sent again and every copy on the topic is identical."""
    with EmbeddedBroker(log_path=tmp_path / "out-broker.log") as out_broker:
        assert out_broker.process is not None
        frozen = out_broker.process.pid
        kafka = dataclasses.replace(kafka_config.kafka, bootstrap_servers=(out_broker.bootstrap,))
        topic = "frozen.regimes"
        ensure_topic(kafka, topic, 1)
        records = [OutboxRecord(k, topic, b"SYM", f'{{"n":{k}}}'.encode()) for k in range(50)]
        stop = threading.Event()
        producer = OutputProducer(kafka, timeout_s=3.0, stop=stop)
        try:
            producer.send(records[:1])  # connected, topic known
            os.killpg(frozen, signal.SIGSTOP)
            try:
                named = f"not acknowledged by Kafka at {out_broker.bootstrap}"
                with pytest.raises(OutputError, match=named):
                    producer.send(records)
                timer = threading.Timer(0.5, stop.set)
                timer.start()
                long = OutputProducer(kafka, timeout_s=60.0, stop=stop)
                began = time.monotonic()
                with pytest.raises(OutputError, match="stopped"):
                    long.send(records)
                assert time.monotonic() - began < 30  # the stop, not the 60 s timeout
                long.close()
            finally:
                os.killpg(frozen, signal.SIGCONT)
            stop.clear()
            producer.send(records)  # a new session, once the broker answers again
        finally:
            producer.close()
        sent = read_all(out_broker.bootstrap, topic)
    values: dict[int, set[bytes]] = defaultdict(set)
    for key, value in sent:
        assert key == b"SYM"
        values[json.loads(value)["n"]].add(value)
    assert sorted(values) == list(range(50))
    assert all(len(v) == 1 for v in values.values())
