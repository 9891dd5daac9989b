"""From exposures to returns: an exposure decided at a bar's close earns the next bar's return.

Exposure `decided[i]` is set at the close of bar i from what is known then and held through bar
i + 1; the trade that sets it is made at that close and costs `cost` per unit of turnover
(|decided[i] - decided[i - 1]|, from cash before the first decision), charged on bar i + 1.
Cash, the part not exposed, earns the risk-free rate. So bar j's return is

    held_j * market_j + (1 - held_j) * rf - cost * |held_j - held_{j-1}|,  held_j = decided[j-1]

and nothing a strategy decides at bar j can touch bar j's own return.

>>> import numpy as np
>>> book = ledger(np.array([100.0, 110.0, 99.0]), np.array([1.0, 0.0, 0.0]), cost=0.0)
>>> [round(float(r), 3) for r in book.net]
[0.1, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["TRADING_DAYS", "Floats", "Ledger", "ledger"]

Floats = npt.NDArray[np.float64]

#: Bars per year, for annualising daily figures.
TRADING_DAYS = 252


@dataclass(frozen=True)
class Ledger:
    """One strategy's bars after its first decision: the exposure held through each bar, the
    market's return, the turnover traded into it, and the return after costs (`net`)."""

    held: Floats
    market: Floats
    turnover: Floats
    net: Floats
    cost_rate: float = 0.0

    def part(self, bars: slice) -> Ledger:
        """The same ledger over some of its bars (an event's window)."""
        return Ledger(
            self.held[bars], self.market[bars], self.turnover[bars], self.net[bars], self.cost_rate
        )

    @property
    def costs(self) -> Floats:
        """The cost charged on each bar."""
        return np.asarray(self.turnover * self.cost_rate, dtype=np.float64)


def ledger(
    closes: npt.ArrayLike, decided: npt.ArrayLike, cost: float, risk_free: float = 0.0
) -> Ledger:
    """The bars 1..n-1 of `closes` traded on the exposures `decided` at the closes 0..n-2
    (the last decision has no next bar). `cost` is a fraction per unit of turnover (5 bps:
    0.0005); `risk_free` an annual rate earned by cash."""
    c = np.asarray(closes, dtype=np.float64)
    e = np.asarray(decided, dtype=np.float64)
    if c.shape != e.shape or c.ndim != 1:
        raise ValueError(f"closes and decided differ in shape ({c.shape}, {e.shape})")
    market = c[1:] / c[:-1] - 1.0
    held = e[:-1]
    turnover = np.abs(np.diff(held, prepend=0.0))
    rf = risk_free / TRADING_DAYS
    net = held * market + (1.0 - held) * rf - cost * turnover
    return Ledger(held, market, turnover, net, cost)
