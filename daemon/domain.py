"""The nouns every layer shares: the daily `Bar`, the unit that flows from Kafka through the
pipeline into the store."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    """One validated daily bar of one symbol (what a market-data event carries)."""

    symbol: str
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def ts(self) -> str:
        """The trading day as stored: YYYY-MM-DD."""
        return self.day.isoformat()

    def to_json(self) -> bytes:
        """The canonical event payload for this bar (what producers publish)."""
        payload = {
            "symbol": self.symbol,
            "ts": self.ts,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "interval": "1d",
        }
        return json.dumps(payload, separators=(",", ":")).encode()
