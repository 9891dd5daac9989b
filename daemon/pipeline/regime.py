"""The market-regime rules, shared by the per-event path and the batch path.

Both paths compute the same per-bar inputs (the highest close of the previous bars, the VIX or
its proxy) and hand them to one decision function, `decide`, that also carries the crash
episode from bar to bar. The per-event path keeps small per-symbol windows (`SymbolRegime`);
the batch path computes the inputs vectorised over a whole history (`label_history`).
See docs/regimes.md for the rules in words.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from daemon.config import RegimeConfig
from daemon.domain import REGIMES

VixSource = Literal["vix", "proxy", "none"]

ANNUALISE = math.sqrt(252.0)


@dataclass(frozen=True)
class Episode:
    """A crash episode: first crash bar, last crash bar (bar indices) and lowest close so far."""

    start: int
    last_crash: int
    low: float


@dataclass(frozen=True)
class RegimeLabel:
    """The regime of one bar and the volatility reading behind it."""

    regime: str | None
    vix: float | None
    vix_source: VixSource


def vix_band(rules: RegimeConfig, vix: float) -> str:
    """The regime a VIX level alone implies: crash, high_volatility, normal or low_volatility."""
    if vix > rules.vix_crash:
        return "crash"
    if vix >= rules.vix_high:
        return "high_volatility"
    if vix >= rules.vix_normal:
        return "normal"
    return "low_volatility"


def decide(
    rules: RegimeConfig,
    index: int,
    close: float,
    prior_max: float | None,
    vix: float | None,
    episode: Episode | None,
) -> tuple[str | None, Episode | None]:
    """Apply the rules, first match wins, to bar number `index` of one symbol.

    `prior_max` is the highest close of the `price_crash_lookback_bars` bars before this one
    (None for the first bar), `vix` the VIX or proxy reading for the day (None when neither is
    known). Returns the regime (None when no rule can decide) and the episode after this bar.
    """
    window = rules.recovery_window_bars
    if episode is not None and index - episode.last_crash > window:
        episode = None
    if episode is not None and close < episode.low:
        episode = Episode(episode.start, episode.last_crash, close)

    regime: str | None
    if prior_max is not None and close <= (1.0 - rules.price_crash_drop) * prior_max:
        regime = "crash"
    elif (
        episode is not None
        and index > episode.last_crash
        and close >= (1.0 + rules.recovery_rebound) * episode.low
    ):
        regime = "recovery"
    elif vix is None:
        regime = None
    else:
        regime = vix_band(rules, vix)

    if regime == "crash":
        if episode is None:
            episode = Episode(index, index, close)
        else:
            episode = Episode(episode.start, index, episode.low)
    return regime, episode


_CRASH = REGIMES.index("crash")
_RECOVERY = REGIMES.index("recovery")
_HIGH = REGIMES.index("high_volatility")
_NORMAL = REGIMES.index("normal")
_LOW = REGIMES.index("low_volatility")


@dataclass
class Episodes:
    """Crash episodes of many symbols, one slot each (the columns of `Episode`)."""

    active: np.ndarray
    start: np.ndarray
    last_crash: np.ndarray
    low: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> Episodes:
        return cls(
            np.zeros(capacity, dtype=bool),
            np.zeros(capacity, dtype=np.int64),
            np.zeros(capacity, dtype=np.int64),
            np.zeros(capacity),
        )

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` slots, keeping the ones there are."""
        n = len(self.active)
        if capacity <= n:
            return
        for name in ("active", "start", "last_crash", "low"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:n] = old
            setattr(self, name, new)

    def set(self, slot: int, episode: Episode | None) -> None:
        self.active[slot] = episode is not None
        if episode is not None:
            self.start[slot], self.last_crash[slot] = episode.start, episode.last_crash
            self.low[slot] = episode.low

    def get(self, slot: int) -> Episode | None:
        if not self.active[slot]:
            return None
        return Episode(int(self.start[slot]), int(self.last_crash[slot]), float(self.low[slot]))


def decide_many(
    rules: RegimeConfig,
    slots: np.ndarray,
    index: np.ndarray,
    close: np.ndarray,
    prior_max: np.ndarray,
    vix: np.ndarray,
    episodes: Episodes,
) -> np.ndarray:
    """`decide` for the next bar of several symbols at once (distinct `slots`): their regime
    codes (an index into `REGIMES`, -1 when undecided); `episodes` move on in place.
    `prior_max` is NaN where `decide` gets None, and so is `vix`."""
    active = episodes.active[slots]
    last = episodes.last_crash[slots]
    start = episodes.start[slots]
    low = episodes.low[slots]
    active &= ~(index - last > rules.recovery_window_bars)
    low = np.where(active & (close < low), close, low)
    crash = close <= (1.0 - rules.price_crash_drop) * prior_max  # False where NaN
    recovery = ~crash & active & (index > last) & (close >= (1.0 + rules.recovery_rebound) * low)
    band = np.where(
        vix > rules.vix_crash,
        _CRASH,
        np.where(vix >= rules.vix_high, _HIGH, np.where(vix >= rules.vix_normal, _NORMAL, _LOW)),
    )
    codes = np.where(
        crash, _CRASH, np.where(recovery, _RECOVERY, np.where(np.isnan(vix), -1, band))
    )
    crash = codes == _CRASH  # a VIX in the crash band starts or extends an episode too
    fresh = crash & ~active
    episodes.start[slots] = np.where(fresh, index, start)
    episodes.last_crash[slots] = np.where(crash, index, last)
    episodes.low[slots] = np.where(fresh, close, low)
    episodes.active[slots] = active | crash
    return codes


def proxy_vix(rules: RegimeConfig, log_returns: Sequence[float]) -> float:
    """The VIX stand-in: annualised sample stdev of the log returns, times `vix_proxy_scale`."""
    n = len(log_returns)
    mean = math.fsum(log_returns) / n
    var = math.fsum((r - mean) ** 2 for r in log_returns) / (n - 1)
    return 100.0 * ANNUALISE * math.sqrt(var) * rules.vix_proxy_scale


class VixHistory:
    """VIX closes by day, so a bar can find the latest reading at or before its own day."""

    def __init__(self) -> None:
        self._days: list[dt.date] = []
        self._values: list[float] = []
        # The last lookup: every symbol's bar of a day asks for the same day.
        self._last: tuple[dt.date, int, float | None] | None = None

    def __len__(self) -> int:
        return len(self._days)

    def add(self, day: dt.date, value: float) -> None:
        """Record the VIX close for `day` (a later reading for the same day replaces it)."""
        self._last = None
        i = bisect.bisect_left(self._days, day)
        if i < len(self._days) and self._days[i] == day:
            self._values[i] = value
        else:
            self._days.insert(i, day)
            self._values.insert(i, value)

    def at(self, day: dt.date, max_staleness_days: int) -> float | None:
        """The latest VIX at or before `day`, or None if there is none that fresh."""
        last = self._last
        if last is not None and last[0] == day and last[1] == max_staleness_days:
            return last[2]
        i = bisect.bisect_right(self._days, day) - 1
        if i < 0 or (day - self._days[i]).days > max_staleness_days:
            value = None
        else:
            value = self._values[i]
        self._last = (day, max_staleness_days, value)
        return value


class SymbolRegime:
    """Per-symbol state of the per-event path: O(window) work per bar."""

    def __init__(self, rules: RegimeConfig) -> None:
        self.rules = rules
        self.index = -1
        self.last_close: float | None = None
        self.closes: deque[float] = deque(maxlen=rules.price_crash_lookback_bars)
        self.returns: deque[float] = deque(maxlen=rules.vix_proxy_window_bars)
        self.episode: Episode | None = None

    def update(self, close: float, vix: float | None) -> RegimeLabel:
        """Label the next bar of this symbol given the real VIX for its day (or None)."""
        self.index += 1
        if self.last_close is not None:
            self.returns.append(math.log(close / self.last_close))
        source: VixSource = "vix"
        if vix is None:
            if len(self.returns) == self.rules.vix_proxy_window_bars:
                vix, source = proxy_vix(self.rules, self.returns), "proxy"
            else:
                source = "none"
        prior_max = max(self.closes) if self.closes else None
        regime, self.episode = decide(self.rules, self.index, close, prior_max, vix, self.episode)
        self.closes.append(close)
        self.last_close = close
        return RegimeLabel(regime, vix, source)


def restore_episode(
    rules: RegimeConfig, closes: Sequence[float], regimes: Sequence[str | None]
) -> Episode | None:
    """The crash episode in force after the last of these bars, from their stored regimes.

    Indices are positions in `closes`. The episode starts at the first crash bar of the last
    chain of crash bars that are at most `recovery_window_bars` apart; if that chain reaches
    the first bar given, the episode may have begun earlier (load enough bars).
    """
    window = rules.recovery_window_bars
    crashes = [i for i, r in enumerate(regimes) if r == "crash"]
    if not crashes or len(closes) - 1 - crashes[-1] > window:
        return None
    start = crashes[-1]
    for i in reversed(crashes[:-1]):
        if start - i > window:
            break
        start = i
    return Episode(start, crashes[-1], min(closes[start:]))


class RegimeLabeler:
    """The per-event path: one `SymbolRegime` per symbol plus the shared VIX history."""

    def __init__(self, rules: RegimeConfig) -> None:
        self.rules = rules
        self.vix = VixHistory()
        self.symbols: dict[str, SymbolRegime] = {}

    def add_vix(self, day: dt.date, value: float) -> None:
        """Feed a VIX close (the `^VIX` symbol's bar)."""
        self.vix.add(day, value)

    def restore(self, symbol: str, closes: Sequence[float], regimes: Sequence[str | None]) -> None:
        """Rebuild a symbol's state from its stored bars (oldest first) and their regimes."""
        state = SymbolRegime(self.rules)
        state.index = len(closes) - 1
        if closes:
            state.last_close = closes[-1]
        state.closes.extend(closes[-self.rules.price_crash_lookback_bars :])
        tail = closes[-(self.rules.vix_proxy_window_bars + 1) :]
        state.returns.extend(math.log(b / a) for a, b in itertools.pairwise(tail))
        state.episode = restore_episode(self.rules, closes, regimes)
        self.symbols[symbol] = state

    def label(self, symbol: str, day: dt.date, close: float) -> RegimeLabel:
        """Label the next bar of `symbol`; bars of one symbol must come in time order."""
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolRegime(self.rules)
        return state.update(close, self.vix.at(day, self.rules.vix_max_staleness_days))


def vix_for_days(rules: RegimeConfig, days: pd.DatetimeIndex, vix: pd.Series | None) -> np.ndarray:
    """For each day, the latest VIX close at or before it within the staleness limit (or NaN)."""
    out = np.full(len(days), np.nan)
    if vix is None or vix.empty:
        return out
    vix = vix.dropna().sort_index()
    vix_days = vix.index.values.astype("datetime64[D]")
    bar_days = days.values.astype("datetime64[D]")
    pos = np.searchsorted(vix_days, bar_days, side="right") - 1
    found = pos >= 0
    safe = np.where(found, pos, 0)
    age = (bar_days - vix_days[safe]).astype(np.int64)
    fresh = found & (age <= rules.vix_max_staleness_days)
    out[fresh] = vix.to_numpy(dtype=float)[safe[fresh]]
    return out


def label_history(
    rules: RegimeConfig, close: pd.Series, vix: pd.Series | None = None
) -> pd.DataFrame:
    """The batch path: label a whole daily history of one symbol.

    `close` is indexed by day (sorted, unique); `vix` holds VIX closes indexed by day. Returns
    a frame indexed like `close` with columns close, vix, vix_source and regime.
    """
    closes = close.to_numpy(dtype=float)
    days = pd.DatetimeIndex(close.index)
    real_vix = vix_for_days(rules, days, vix)

    w = rules.vix_proxy_window_bars
    log_ret = np.log(closes[1:] / closes[:-1])
    proxy = np.full(len(closes), np.nan)
    if len(log_ret) >= w:
        windows = np.lib.stride_tricks.sliding_window_view(log_ret, w)
        proxy[w:] = 100.0 * ANNUALISE * windows.std(axis=1, ddof=1) * rules.vix_proxy_scale

    prior_max = (
        pd.Series(closes).shift(1).rolling(rules.price_crash_lookback_bars, min_periods=1).max()
    ).to_numpy()

    has_vix = ~np.isnan(real_vix)
    reading = np.where(has_vix, real_vix, proxy)
    source = np.where(has_vix, "vix", np.where(np.isnan(proxy), "none", "proxy"))

    regimes: list[str | None] = []
    episode: Episode | None = None
    for i, c in enumerate(closes):
        pm = None if math.isnan(prior_max[i]) else float(prior_max[i])
        v = None if math.isnan(reading[i]) else float(reading[i])
        regime, episode = decide(rules, i, float(c), pm, v, episode)
        regimes.append(regime)

    return pd.DataFrame(
        {
            "close": closes,
            "vix": reading,
            "vix_source": pd.Series(source, dtype=object, index=close.index),
            "regime": pd.Series(regimes, dtype=object, index=close.index),
        },
        index=close.index,
    )
