"""sd_notify over a real datagram socket: what systemd would receive, and when."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.runtime.sdnotify import Notifier


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in a short temporary directory, and its path."""
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            yield sock, path


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_without_notify_socket_every_call_is_a_no_op():
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


def test_messages_reach_a_path_socket(listener):
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert received(sock) == "READY=1"
    assert notifier.stopping()
    assert received(sock) == "STOPPING=1"
    assert notifier.notify("STATUS=consuming", "READY=1")
    assert received(sock) == "STATUS=consuming\nREADY=1"


def test_an_at_sign_means_the_abstract_namespace():
    name = f"regimed-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == "READY=1"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only(env, interval):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/x", **env}, pid=4242)
    assert notifier.watchdog_interval_s == interval


def test_watchdog_pings_once_per_half_interval(listener):
    sock, path = listener
    now = [100.0]
    notifier = Notifier(path, watchdog_usec=10_000_000, clock=lambda: now[0])
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1"
    now[0] += 4.9
    assert notifier.watchdog() is False
    assert nothing_waiting(sock)
    now[0] += 0.1
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1"


def test_a_relative_or_foreign_address_is_refused_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "NOTIFY_SOCKET='vsock:2:1234'" in caplog.text


def test_a_dead_socket_is_logged_not_raised(caplog):
    with tempfile.TemporaryDirectory(prefix="sdn") as folder:
        notifier = Notifier(os.path.join(folder, "gone"))
        with caplog.at_level(logging.WARNING):
            assert notifier.ready() is False
    assert "sd_notify to" in caplog.text
    assert "gone" in caplog.text


@pytest.mark.integration
def test_regimed_run_says_ready_pings_the_watchdog_and_says_stopping(kafka_config, tmp_path):
    """The real daemon process, as systemd starts it: environment in, datagrams out."""
    config = Path(tmp_path / "config.toml")
    config.write_text(kafka_config.to_toml())
    name = f"regimed-test-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIMED_", "WATCHDOG_"))}
    env |= {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "600000"}  # ping every 0.3 s
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(60)
        command = [sys.executable, "-m", "daemon", "run", "--config", str(config)]
        proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            statuses: list[str] = []

            def next_message() -> str:
                """The next datagram other than STATUS= (those are kept aside)."""
                while (message := received(sock)).startswith("STATUS="):
                    statuses.append(message)
                return message

            messages = [next_message()]
            assert messages == ["READY=1"]
            pings_from = time.monotonic()
            messages += [next_message(), next_message(), next_message()]
            took = time.monotonic() - pings_from
            assert messages[1:] == ["WATCHDOG=1"] * 3
            assert took < 3.0, f"three pings took {took:.1f}s at a 0.3 s interval"
            # a one-line summary for `systemctl status`
            assert statuses and "events consumed" in statuses[0]
            assert "no champion" in statuses[0]
            proc.send_signal(signal.SIGTERM)
            while messages[-1] == "WATCHDOG=1":
                messages.append(next_message())
            assert messages[-1] == "STOPPING=1"
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 0, err
