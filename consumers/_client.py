"""Options shared by every Kafka client regimed opens (consumer, producers, admin)."""

from __future__ import annotations

from typing import Any

from daemon.config import KafkaConfig


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """kafka-python keyword arguments for the brokers, client id and SASL/SSL settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_plain_username
        options["sasl_plain_password"] = config.sasl_plain_password.get_secret_value()
    if config.security_protocol.endswith("SSL"):
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(config, key):
                options[key] = getattr(config, key)
        if config.ssl_password:
            options["ssl_password"] = config.ssl_password.get_secret_value()
    return options
