"""The Kafka client helpers: the bootstrap probe, and the security settings under
librdkafka's names for the output producer."""

from __future__ import annotations

import logging
import socket

import pytest
from confluent_kafka import KafkaException, Producer

from consumers._client import librdkafka_options, probe
from consumers.broker import free_port
from consumers.outputs import LibrdkafkaLog
from daemon.config import KafkaConfig
from daemon.config.settings import Secret


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


def test_the_security_settings_keep_their_values_under_librdkafka_names(tmp_path):
    server = f"127.0.0.1:{free_port()}"
    plain = librdkafka_options(KafkaConfig(bootstrap_servers=(server,), client_id="rd"))
    assert plain == {
        "bootstrap.servers": server,
        "client.id": "rd",
        "security.protocol": "plaintext",
    }
    cafile, certfile, keyfile = (str(tmp_path / f"{n}.pem") for n in ("ca", "cert", "key"))
    config = KafkaConfig(
        bootstrap_servers=(server, "127.0.0.1:1"),
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="svc",
        sasl_plain_password=Secret("pw"),
        ssl_cafile=cafile,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_password=Secret("keypw"),
    )
    assert librdkafka_options(config) == {
        "bootstrap.servers": f"{server},127.0.0.1:1",
        "client.id": "regimed",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "ssl.ca.location": cafile,
        "ssl.certificate.location": certfile,
        "ssl.key.location": keyfile,
        "ssl.key.password": "keypw",
    }
    # SASL without SSL passes no SSL files, and librdkafka knows every name it is given.
    sasl = KafkaConfig(
        bootstrap_servers=(server,),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="svc",
        sasl_plain_password=Secret("pw"),
        ssl_cafile=cafile,
    )
    options = librdkafka_options(sasl)
    assert "ssl.ca.location" not in options and options["sasl.mechanism"] == "SCRAM-SHA-256"
    Producer(options).flush(0)
    # The SSL file settings are read: a missing CA file is named when the client is built.
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location failed"):
        Producer(librdkafka_options(config))


def test_librdkafka_connection_failures_are_kept_at_debug_and_the_rest_keeps_its_level(caplog):
    caplog.set_level(logging.DEBUG, logger="consumers.outputs.librdkafka")
    log = LibrdkafkaLog()
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connection refused")
    log.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "ignored")
    log.log(logging.INFO, "%s [%s] %s", "IDEMPSTATE", "rdkafka#producer-1", "Assigned")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "FAIL [rdkafka#producer-1] Connection refused"),
        (logging.WARNING, "CONFWARN [rdkafka#producer-1] ignored"),
        (logging.INFO, "IDEMPSTATE [rdkafka#producer-1] Assigned"),
    ]
