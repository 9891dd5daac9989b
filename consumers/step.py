"""What the market-data consumer hands the daemon every poll, and what it gets back.

`MarketDataConsumer` (consumers/kafka_source.py) is Kafka transport: it polls, decodes and
dead-letters, then hands each decoded `Poll` to an `IngestStep` (`daemon.runtime.ingest.Ingest`
in the daemon: pipeline, scores, one store transaction, metrics), commits the offsets of each
batch the step reports `Stored`, and keeps the `ConsumerMetrics` of its own (records consumed,
lag). A `RunSummary` says what one `run` did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from consumers.events import DecodedBatch
from daemon.domain import DeadLetterRow

if TYPE_CHECKING:
    from prometheus_client import Counter as CounterMetric
    from prometheus_client import Gauge

__all__ = ["ConsumerMetrics", "IngestStep", "Poll", "RunSummary", "Stored"]


@dataclass
class RunSummary:
    """What one `run` did."""

    consumed: int = 0
    stored_bars: int = 0
    rejected: int = 0
    skipped_duplicates: int = 0
    batches: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Poll:
    """One poll, decoded: what the ingest step turns into one store transaction."""

    #: The valid bars of every partition, partition after partition (None: no valid bar).
    bars: DecodedBatch | None
    #: (topic, partition) -> the next offset to consume, for every partition with new records.
    offsets: dict[tuple[str, int], int]
    valid: int
    #: Rejected records by reason.
    rejected: Counter[str]
    #: Rejected records the dead-letter topic did not take: the store parks them.
    dead_letters: list[DeadLetterRow]


@dataclass(frozen=True)
class Stored:
    """A poll whose batch the store has committed, and the bars it stored."""

    poll: Poll
    bars: int


class IngestStep(Protocol):
    """What the consumer hands every poll to (`daemon.runtime.ingest.Ingest` in the daemon)."""

    def open(self) -> None:
        """Before the first poll."""

    def close(self) -> None:
        """After the last poll (a batch in flight is dropped: `settle` it first)."""

    def resume(self) -> dict[int, int]:
        """Partitions were assigned: reload what another member may have stored meanwhile;
        the next offset of each partition of the topic, as the store holds it."""

    def forget(self, symbols: list[str]) -> None:
        """These symbols' partitions moved: their state is to be rebuilt from the store."""

    def write(self, poll: Poll) -> Stored | None:
        """Hand the poll's batch to the store; the batch that this call saw committed (this
        one, or the one that was in flight), None when none."""

    def settle(self) -> Stored | None:
        """Wait for the batch in flight, if any: the batch committed, None when none."""

    def idle(self) -> None:
        """A poll brought no record."""


class ConsumerMetrics(Protocol):
    """The metrics the consumer keeps itself (`daemon.monitor.metrics.Metrics` has them)."""

    @property
    def events_consumed(self) -> CounterMetric: ...

    @property
    def consumer_lag(self) -> Gauge: ...
