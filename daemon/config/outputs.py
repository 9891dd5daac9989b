"""Configuration of the daemon's output topics (`[outputs]`, docs/outputs.md).

Kept apart from `daemon.config.loader` (which imports it into `Config`) so each module stays
small. The records themselves are built in `daemon.pipeline.records` and published by
`daemon.runtime.publisher`.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config.settings import bounded, show
from daemon.errors import ConfigError

#: Characters Kafka allows in a topic name, and its length limit.
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_TOPIC_MAX = 249


@dataclass(frozen=True)
class OutputsConfig:
    """Where predictions and regimes go, and how many unpublished records the store may hold.

    - `bootstrap_servers`: the Kafka cluster of the output topics; empty: the cluster of
      `kafka.bootstrap_servers` (with the `[kafka]` security settings in both cases).
    - `predictions_topic`: one record per live row the champion scores ("" turns it off).
    - `regimes_topic`: one record per stored bar ("" turns it off).
    - `max_pending`: records written but not yet acknowledged by the broker; at this many the
      consumer stops taking market data until the publisher catches up (the output broker is
      down or slow). One poll and the batch in flight may pass it.
    - `publish_batch_records`: records the publisher sends before it waits for the broker's
      acknowledgements and marks them published.
    """

    bootstrap_servers: tuple[str, ...] = ()
    predictions_topic: str = "regimed.predictions"
    regimes_topic: str = "regimed.regimes"
    max_pending: int = bounded(200_000, ge=1)
    publish_batch_records: int = bounded(20_000, ge=1, le=100_000)

    def __post_init__(self) -> None:
        for i, server in enumerate(self.bootstrap_servers):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(
                    f"outputs.bootstrap_servers[{i}] = {show(server)}: expected host:port"
                )
        for key in ("predictions_topic", "regimes_topic"):
            topic = getattr(self, key)
            if topic and (
                len(topic) > _TOPIC_MAX or topic in (".", "..") or set(topic) - _TOPIC_CHARS
            ):
                raise ConfigError(
                    f"outputs.{key} = {show(topic)}: expected a Kafka topic name (letters, "
                    f"digits, '.', '_', '-'; at most {_TOPIC_MAX}) or \"\" to turn it off"
                )
        if self.predictions_topic and self.predictions_topic == self.regimes_topic:
            raise ConfigError(
                f"outputs.regimes_topic = {show(self.regimes_topic)}: also "
                "outputs.predictions_topic; expected two different topics"
            )

    @property
    def enabled(self) -> bool:
        """Whether any output topic is on."""
        return bool(self.predictions_topic or self.regimes_topic)
