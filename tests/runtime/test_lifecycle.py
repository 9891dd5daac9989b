"""`regimed run` as systemd runs it: stopped by SIGTERM at any moment (alone or with its whole
process group), and a broker that is down at start-up or goes away while it runs."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.broker import EmbeddedBroker, free_port
from consumers.replay import ensure_topic, publish
from daemon.config import Config, MetricsConfig
from daemon.runtime.sdnotify import Notifier
from daemon.runtime.service import Service
from daemon.store.sqlite import Store
from tests.factories import children, events_stored, numbered, scrape, wait_for

pytestmark = pytest.mark.integration

#: How long a stop may take, as the unit's contract says (TimeoutStopSec is 60).
STOP_WITHIN_S = 10.0
#: The stop handler is in place this soon after the start (the imports after it take seconds).
HANDLER_WITHIN_S = 1.0


class Daemon:
    """`regimed run` in a subprocess of its own session; stderr collected line by line."""

    def __init__(self, config: Config, tmp_path: Path, env: dict[str, str] | None = None):
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(config.to_toml())
        environ = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(path)],
            env=environ | (env or {}),
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group, as a systemd unit's cgroup
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def metrics_port(self) -> int:
        found = wait_for(
            lambda: re.search(r"metrics on http://[^:]+:(\d+)/metrics", self.text), 60, "/metrics"
        )
        return int(found.group(1))

    def healthz(self) -> tuple[int, str]:
        return scrape(self, "/healthz")  # type: ignore[arg-type]

    def handles_sigterm(self) -> bool:
        """Whether the process has a handler for SIGTERM (its caught-signals mask)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
        return False

    def children(self) -> list[int]:
        """The pids of the daemon's child processes (the store's writer, at start-up)."""
        return children(self.proc.pid)

    def stop(self, group: bool) -> tuple[int, float]:
        """SIGTERM to the daemon (or its whole process group): exit code and seconds taken."""
        sent = time.monotonic()
        if group:
            os.killpg(self.proc.pid, signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self._reader.join(timeout=10)
        return code, time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def stored_offset(config: Config) -> int | None:
    with Store.open(config.store, read_only=True) as store:
        return store.offsets(config.kafka.topic).get(0)


def committed_offset(config: Config) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=list(config.kafka.bootstrap_servers),
        group_id=config.kafka.group_id,
        enable_auto_commit=False,
    )
    try:
        return consumer.committed(TopicPartition(config.kafka.topic, 0))
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize(
    ("moment", "group"),
    [
        (0.2, False),
        (1.0, True),
        (3.0, True),
        ("writer starting", True),
        ("consuming", True),
        ("consuming", False),
    ],
)
def test_sigterm_at_any_moment_exits_0_within_10s_and_loses_nothing(
    kafka_config, tmp_path, daemons, moment, group
):
    kafka = dataclasses.replace(kafka_config.kafka, max_poll_records=100)
    config = kafka_config.replace(kafka=kafka)
    n = 4000
    if moment == "consuming":
        publish(config.kafka, numbered(n), progress=False)
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    if moment == "consuming":
        wait_for(lambda: events_stored(config) > 0, 60, "consumption to begin")
    elif moment == "writer starting":
        # the writer child is a new interpreter that takes a second to import its modules: a
        # signal to the whole group in that time must not kill it
        wait_for(daemon.children, 60, "the writer process")
    else:
        assert isinstance(moment, float)
        # The stop handler is the first thing `regimed run` does, before the imports that take
        # seconds (0.12 s after the start on an idle machine, 0.19-0.27 s with the two cores
        # loaded 2x): wait for it if the interpreter is slower than `moment` to get there, but
        # it must come long before those imports are done (about 2 s idle).
        wait_for(daemon.handles_sigterm, 10, "the stop handler")
        assert time.monotonic() - daemon.started < HANDLER_WITHIN_S
        time.sleep(max(0.0, moment - (time.monotonic() - daemon.started)))
    at = time.monotonic() - daemon.started
    code, took = daemon.stop(group)
    assert code == 0, f"exit {code} for SIGTERM {at:.1f}s after start:\n{daemon.text}"
    assert took < STOP_WITHIN_S, f"{took:.1f}s to stop"
    assert "Traceback" not in daemon.text and "writer process" not in daemon.text
    if moment == "consuming":
        stored = events_stored(config)
        assert 0 < stored < n, "the stop came after the whole stream"
        # every stored event counted once, and the offsets stored (and committed on the clean
        # stop) point just past the last one stored
        assert stored_offset(config) == stored
        assert committed_offset(config) == stored


def test_kafka_down_at_start_is_waited_for_and_consumed_once_it_is_up(tmp_path, daemons):
    port = free_port()
    config = Config(
        kafka=dataclasses.replace(
            Config().kafka,
            bootstrap_servers=(f"127.0.0.1:{port}",),
            topic="bars-down-at-start",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        ),
        store=dataclasses.replace(Config().store, path=str(tmp_path / "regimed.db")),
        metrics=MetricsConfig(port=0, healthz_stall_seconds=5.0),
    )
    name = f"regimed-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name)
        notify.settimeout(30)
        daemon = Daemon(config, tmp_path, env={"NOTIFY_SOCKET": "@" + name})
        daemons.append(daemon)
        # READY=1 first (a broker outage must not fail the start), then STATUS says why it waits
        assert notify.recv(4096).decode() == "READY=1"
        status = notify.recv(4096).decode()
        assert status.startswith(f"STATUS=waiting for Kafka at 127.0.0.1:{port}"), status
    attempts = wait_for(
        lambda: [line for line in daemon.lines if "is not reachable" in line][1:], 30, "retries"
    )
    assert all(" WARNING " in line and f"127.0.0.1:{port}" in line for line in attempts)
    code, body = daemon.healthz()
    assert code == 503 and "waiting for Kafka" in body
    # kafka-python's own connection lines and tracebacks stay out of the log
    assert not [line for line in daemon.lines if " kafka." in line], daemon.text
    assert "Traceback" not in daemon.text
    with EmbeddedBroker(port=port, log_path=tmp_path / "broker.log") as broker:
        ensure_topic(config.kafka, config.kafka.topic, 1)
        publish(config.kafka, numbered(300), progress=False)
        wait_for(lambda: events_stored(config) == 300, 90, "the stream")
        wait_for(lambda: daemon.healthz()[0] == 200, 30, "a healthy daemon")
        assert any("answers: consuming" in line for line in daemon.lines)
        code, took = daemon.stop(group=True)
        assert broker.process is not None
    assert code == 0, daemon.text
    assert took < STOP_WITHIN_S


def test_sigterm_while_waiting_for_kafka_exits_0_within_10s(tmp_path, daemons):
    config = Config(
        kafka=dataclasses.replace(Config().kafka, bootstrap_servers=(f"127.0.0.1:{free_port()}",)),
        store=dataclasses.replace(Config().store, path=str(tmp_path / "regimed.db")),
        metrics=MetricsConfig(port=0),
    )
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    wait_for(lambda: [ln for ln in daemon.lines if "is not reachable" in ln][1:], 30, "retries")
    code, took = daemon.stop(group=True)
    assert code == 0, daemon.text
    assert took < STOP_WITHIN_S
    assert "regimed stopped" in daemon.text


def test_a_broker_outage_while_running_is_503_one_warning_then_info_and_200(tmp_path, caplog):
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        config = Config(
            kafka=dataclasses.replace(
                Config().kafka,
                bootstrap_servers=(broker.bootstrap,),
                topic="bars-outage",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            ),
            store=dataclasses.replace(Config().store, path=str(tmp_path / "regimed.db")),
            metrics=MetricsConfig(port=0, healthz_stall_seconds=3.0),
        )
        ensure_topic(config.kafka, config.kafka.topic, 1)
        publish(config.kafka, numbered(200), progress=False)
        name = f"regimed-test-{uuid.uuid4().hex}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind("\0" + name)
        notify.settimeout(1.0)
        service = Service(config, notifier=Notifier("@" + name))
        thread = threading.Thread(target=service.run, kwargs={"timeout_s": 240})
        caplog.set_level(logging.INFO, logger="consumers._client")

        def status_says(words: str) -> bool:
            try:
                while True:
                    if words in notify.recv(4096).decode():
                        return True
            except TimeoutError:
                return False

        def health() -> int:
            return scrape(service, "/healthz")[0]

        def lines(word: str, level: int) -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "consumers._client" and r.levelno == level and word in r.getMessage()
            ]

        thread.start()
        assert broker.process is not None
        group = broker.process.pid
        try:
            wait_for(lambda: events_stored(config) == 200, 60, "the stream")
            wait_for(lambda: health() == 200, 30, "a healthy daemon")
            caplog.clear()
            os.killpg(group, signal.SIGSTOP)
            try:
                wait_for(lambda: health() == 503, 30, "503 while the broker is frozen")
                wait_for(lambda: lines("does not answer", logging.WARNING), 30, "the warning")
                wait_for(lambda: status_says("does not answer"), 30, "STATUS= saying so")
            finally:
                os.killpg(group, signal.SIGCONT)
            wait_for(lambda: health() == 200, 60, "200 once the broker is back")
            wait_for(lambda: lines("answers again", logging.INFO), 30, "the info line")
            assert len(lines("does not answer", logging.WARNING)) == 1
            assert len(lines("answers again", logging.INFO)) == 1
            assert "Kafka at " + broker.bootstrap in lines("does not answer", logging.WARNING)[0]
        finally:
            service.request_stop()
            thread.join(timeout=40)
            notify.close()
        assert not thread.is_alive()
