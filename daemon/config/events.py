"""Configuration of the market-data events and their dead letters (`[events]`).

Kept apart from `daemon.config` (which imports it into `Config`) so each module stays small.
The event schema itself is in `consumers.events`; dead letters in `consumers.dlq`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from daemon.config.settings import bounded

#: The smallest bound `dead_letter_max_bytes` may take: room for the headers and some value.
MIN_DEAD_LETTER_BYTES = 16_384


@dataclass(frozen=True)
class EventsConfig:
    """Which bars are plausible, and how dead letters are published.

    - `min_date`: a bar dated before this day is rejected (`ts_before_min_date`).
    - `max_price`: a bar with a price (open, high, low or close) above this is rejected
      (`price_above_max`).
    - `dead_letter_max_bytes`: the largest dead letter published (the producer's request
      limit); a rejected record that does not fit is published as a bounded copy, a prefix
      of its value. The default is Kafka's own default request limit, 1 MiB.
    - `dead_letter_retry_seconds`: how long a batch's dead letters that fail to publish are
      retried (with capped backoff) before they are parked in the store instead.
    """

    min_date: dt.date = dt.date(1900, 1, 1)
    max_price: float = bounded(1e9, gt=0)
    dead_letter_max_bytes: int = bounded(1_048_576, ge=MIN_DEAD_LETTER_BYTES)
    dead_letter_retry_seconds: float = bounded(30.0, ge=1)
