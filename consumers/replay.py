"""Producers: publish daily bars to the market-data topic (`regimed replay`).

The bars come from `daemon.data.sources` (a CSV file of one symbol, the bundled real history,
N synthetic symbols, or Yahoo Finance), in time order; they are published in the order given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from consumers._client import client_options
from daemon.config import KafkaConfig
from daemon.data.sources import (
    BUNDLED_SYMBOLS,
    bundled_events,
    csv_events,
    frame_events,
    in_time_order,
    synthetic_events,
    vix_events,
    yahoo_events,
    yahoo_frames,
)
from daemon.domain import Bar
from daemon.errors import ReplayError
from daemon.report.progress import Progress

__all__ = [
    "BUNDLED_SYMBOLS",
    "ReplayError",
    "bundled_events",
    "csv_events",
    "ensure_topic",
    "frame_events",
    "in_time_order",
    "publish",
    "synthetic_events",
    "vix_events",
    "yahoo_events",
    "yahoo_frames",
]

logger = logging.getLogger(__name__)


def ensure_topic(config: KafkaConfig, topic: str, partitions: int, timeout_s: float = 30) -> None:
    """Create `topic` with `partitions` partitions unless it exists."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(
            **client_options(config), bootstrap_timeout_ms=int(timeout_s * 1000)
        )
    except KafkaError as exc:
        raise ReplayError(
            f"cannot reach Kafka at {','.join(config.bootstrap_servers)}: {exc}"
        ) from None
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def publish(
    config: KafkaConfig,
    events: Iterable[Bar],
    topic: str | None = None,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    timeout_s: float = 30,
) -> int:
    """Publish events (key = symbol) in the order given; `rate` caps bars per second.

    Returns the number published. Every send is acknowledged before this returns.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = topic or config.topic
    try:
        producer = KafkaProducer(
            **client_options(config),
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise ReplayError(
            f"cannot reach Kafka at {','.join(config.bootstrap_servers)}: {exc}"
        ) from None
    meter = Progress() if progress else None
    sent = 0
    started = time.monotonic()
    futures: list[Any] = []
    try:
        for event in events:
            futures.append(producer.send(topic, key=event.symbol.encode(), value=event.to_json()))
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if len(futures) >= 10_000:
                _settle(producer, futures, timeout_s)
            if meter is not None and meter.due():
                meter.update(_sent_text(sent, total, meter), sent / total if total else None)
        _settle(producer, futures, timeout_s)
    except KafkaError as exc:
        raise ReplayError(f"publishing to {topic} failed after {sent} bars: {exc}") from None
    finally:
        producer.close(timeout=timeout_s)
    if meter is not None:
        meter.line(f"  sent {_sent_text(sent, total, meter)}")
    return sent


def _sent_text(sent: int, total: int | None, meter: Progress) -> str:
    rate = sent / max(meter.elapsed(), 1e-9)
    return f"{sent:,}{f'/{total:,}' if total else ''} bars, {rate:,.0f}/s"


def _settle(producer: Any, futures: list[Any], timeout_s: float) -> None:
    producer.flush(timeout=timeout_s)
    for future in futures:
        future.get(timeout=timeout_s)
    futures.clear()
