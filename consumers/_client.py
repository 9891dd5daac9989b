"""Options shared by every Kafka client regimed opens (consumer, producers, admin), and the
connection helpers of the consumer: a probe of the bootstrap servers and a watch on the broker's
heartbeats (the pause between retried starts is daemon.domain.Backoff)."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from daemon.config import KafkaConfig

logger = logging.getLogger(__name__)


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


#: librdkafka's names of the SASL/SSL settings `client_options` passes to kafka-python.
LIBRDKAFKA_NAMES = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
}


def librdkafka_options(config: KafkaConfig) -> dict[str, str]:
    """The same brokers, client id and SASL/SSL settings as `client_options`, under
    librdkafka's names (the output producer is confluent-kafka's)."""
    kept = client_options(config)
    options = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "client.id": config.client_id,
        "security.protocol": config.security_protocol.lower(),
    }
    for key, name in LIBRDKAFKA_NAMES.items():
        if key in kept:
            options[name] = str(kept[key])
    return options


#: Longest wait for a first bootstrap when the consumer is built: short enough that a stop
#: asked while a broker accepts connections but does not answer (frozen) is seen in seconds.
BOOTSTRAP_TIMEOUT_MS = 4000
#: Seconds the TCP probe of the bootstrap servers may take in all.
PROBE_TIMEOUT_S = 2.0


def quiet_client_logs() -> None:
    """Keep kafka-python's connection chatter out of the log (unless debugging).

    While a broker is away kafka-python logs every failed connection attempt, with its own
    backoff, at WARNING and ERROR, and its event loop warns of slow tasks; regimed logs one
    line per attempt at start-up and one when the broker goes away and comes back instead.
    At DEBUG everything stays visible.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    logging.getLogger("kafka.net").setLevel(logging.CRITICAL)
    logging.getLogger("kafka.conn").setLevel(logging.CRITICAL)
    logging.getLogger("kafka.client_async").setLevel(logging.CRITICAL)
    logging.getLogger("kafka.coordinator").setLevel(logging.ERROR)


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def probe(servers: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to one of the bootstrap `servers` opens within `timeout_s`
    (in all), else why not (the last error): a cheap check before a client is built, which
    would otherwise wait for its bootstrap timeout and leave its I/O thread behind."""
    deadline = time.monotonic() + timeout_s
    reason = "no bootstrap server configured"
    for server in servers:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"{reason}; no answer within {timeout_s:.0f} s"
        try:
            host, port = _host_port(server)
            with socket.create_connection((host, port), timeout=left):
                return None
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            reason = f"{server}: {why}"
    return reason


def open_consumer(options: Mapping[str, Any]) -> Any:
    """A `KafkaConsumer` built with `options`; when building fails (no bootstrap in time),
    the client it had started is closed, so a retried start leaves no thread behind."""
    from kafka import KafkaConsumer

    class _Consumer(KafkaConsumer):  # type: ignore[misc]
        def __init__(self, **configs: Any) -> None:
            try:
                super().__init__(**configs)
            except BaseException:
                client = self.__dict__.get("_client")
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                raise

    return _Consumer(**options)


class BrokerWatch:
    """Whether the broker answers, from the consumer's heartbeats: kafka-python's
    `last-heartbeat-seconds-ago` metric. Logs one WARNING when the silence passes
    `limit_s` and one INFO when the broker answers again.

    Before the first heartbeat the member is joining the group, which the broker may hold for
    up to the rebalance timeout (`join_s`, the consumer's max_poll_interval_ms): until then
    the silence may last `limit_s + join_s`."""

    def __init__(
        self,
        servers: Sequence[str],
        limit_s: float,
        join_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = ",".join(servers)
        self.limit_s = limit_s
        self.join_s = join_s
        self._clock = clock
        self.heard_at = clock()
        self.joined = False
        self.away = False
        self._sampled_at = -float("inf")

    def sample(self, consumer: Any, every_s: float = 1.0) -> None:
        """Read the consumer's heartbeat age (at most every `every_s` seconds)."""
        now = self._clock()
        if now - self._sampled_at < every_s:
            return
        self._sampled_at = now
        try:
            coordinator = consumer.metrics().get("consumer-coordinator-metrics", {})
            ago = float(coordinator.get("last-heartbeat-seconds-ago", float("nan")))
        except Exception:  # metrics are a report: never let them stop the consumer
            return
        if 0 <= ago < float("inf"):  # a heartbeat has been answered (not NaN, not inf)
            self.joined = True
            self.heard_at = max(self.heard_at, now - ago)
        self.update(now)

    def silence_s(self, now: float | None = None) -> float:
        """Seconds since the broker last answered a heartbeat (or since the watch began)."""
        return float(self._clock() if now is None else now) - self.heard_at

    def update(self, now: float | None = None) -> None:
        """Log the change when the broker goes away or comes back."""
        silence = self.silence_s(now)
        limit = self.limit_s if self.joined else self.limit_s + self.join_s
        if not self.away and silence > limit:
            self.away = True
            logger.warning(
                "Kafka at %s does not answer: no heartbeat for %.0f s (consuming resumes "
                "when it is back)",
                self.servers,
                silence,
            )
        elif self.away and silence <= limit:
            self.away = False
            logger.info("Kafka at %s answers again", self.servers)
