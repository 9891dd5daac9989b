"""Regime-change alerts: one webhook when the market symbol enters a regime of
`alerts.regime_change` (default crash and recovery), once per episode.

An episode is a run of the market symbol's bars in one regime; the alert goes out with the
first bar of it, naming the day, the regime before and the VIX reading behind the label. The
regime before the first bar of a run is the last one stored, so a restart does not announce
an episode that is already under way. The alert is sent after the batch holding that bar is
committed: a crash between the commit and the send loses that one alert (never sends it twice).
Prometheus sees the same change in `regimed_market_regime` (deploy/prometheus/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.config import Config
from daemon.store.sqlite import Store

if TYPE_CHECKING:
    from daemon.pipeline.output import Output

__all__ = ["REGIME_CHANGE", "RegimeChange", "RegimeChangeAlerts", "market_bars"]

logger = logging.getLogger(__name__)

#: The `event` of the alert (docs/alerts.md).
REGIME_CHANGE = "regime_change"

#: Sends one alert: event, summary, details, cause (`daemon.runtime.retrains.Retrains.alert`).
Send = Callable[[str, str, dict[str, Any], str], None]


@dataclass(frozen=True)
class RegimeChange:
    """The market symbol entered `regime` on `ts` after `previous` (None: nothing stored)."""

    symbol: str
    ts: str
    regime: str
    previous: str | None
    vix: float | None
    vix_source: str

    def summary(self) -> str:
        vix = "no VIX" if self.vix is None else f"VIX {self.vix:.2f} ({self.vix_source})"
        return (
            f"market {self.symbol} entered {self.regime} on {self.ts} "
            f"(was {self.previous or 'unknown'}; {vix})"
        )

    def details(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "date": self.ts,
            "regime": self.regime,
            "previous_regime": self.previous,
            "vix": self.vix,
            "vix_source": self.vix_source,
        }


def market_bars(out: Output, symbol: str) -> list[tuple[str, str | None, float | None, str]]:
    """(ts, regime, vix, vix_source) of `symbol`'s bars in a batch, in the batch's order."""
    bars = [(b.ts, b.regime, b.vix, b.vix_source) for b in out.bars if b.symbol == symbol]
    bars += [(row[1], row[7], row[8], row[9]) for row in out.block.bars if row[0] == symbol]
    return bars


class RegimeChangeAlerts:
    """Follows the market symbol's regime bar by bar and alerts on entering a watched one."""

    def __init__(self, config: Config, send: Send) -> None:
        self.symbol = config.regime.market_symbol
        self.watched = frozenset(config.alerts.regime_change)
        self.send = send
        self.previous: str | None = None
        self.last_ts: str | None = None

    def restore(self, store: Store) -> None:
        """Take the regime of the last stored market bar as the current one."""
        with store.transaction("read the last market bar", write=False) as conn:
            row = conn.execute(
                "SELECT ts, regime FROM bars WHERE symbol = ? ORDER BY ts DESC LIMIT 1",
                (self.symbol,),
            ).fetchone()
        self.last_ts, self.previous = (None, None) if row is None else (row[0], row[1])

    def observe(
        self, bars: Iterable[tuple[str, str | None, float | None, str]]
    ) -> list[RegimeChange]:
        """Follow stored market bars (ts, regime, vix, vix_source); send and return the
        changes into a watched regime. Bars not after the last one seen (corrections, late
        bars) and bars without a regime change nothing."""
        changes = []
        for ts, regime, vix, vix_source in bars:
            if regime is None or (self.last_ts is not None and ts <= self.last_ts):
                continue
            previous, self.previous, self.last_ts = self.previous, regime, ts
            if regime == previous:
                continue
            change = RegimeChange(self.symbol, ts, regime, previous, vix, vix_source)
            logger.info("market regime: %s", change.summary())
            if regime in self.watched:
                self.send(REGIME_CHANGE, change.summary(), change.details(), f"{regime} {ts}")
                changes.append(change)
        return changes
