"""The consumer's connection helpers: the bootstrap probe."""

from __future__ import annotations

import socket

from consumers._client import probe
from consumers.broker import free_port


def test_the_probe_names_the_server_that_refused_and_passes_one_that_listens():
    closed = f"127.0.0.1:{free_port()}"
    reason = probe([closed])
    assert reason is not None and reason.startswith(closed) and "refused" in reason
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert probe([closed, f"127.0.0.1:{port}"]) is None
    assert probe([]) == "no bootstrap server configured"
