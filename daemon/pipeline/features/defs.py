"""Names, windows and constants of the features, shared by the per-event and the batch path.

See docs/features.md for the definition of every feature and why it is there.
"""

from __future__ import annotations

import math
from typing import Any, Final

from daemon.domain import REGIMES

#: Bump whenever a definition, window or the order of `FEATURE_NAMES` changes: stored samples
#: and trained models carry it, so rows of different versions are never mixed.
FEATURE_VERSION: Final = 1

#: The feature columns, in the order of the per-event arrays and the batch frame's columns.
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_10",
    "ret_20",
    "ret_60",
    "vol_5",
    "vol_10",
    "vol_21",
    "vol_63",
    "parkinson_vol_21",
    "skew_21",
    "skew_63",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "stoch_k_14",
    "bb_pctb_20",
    "bb_width_20",
    "atr_14",
    "hl_range",
    "close_location",
    "gap",
    "body",
    "upper_wick",
    "lower_wick",
    "volume_z_20",
    "drawdown_10",
    "drawdown_60",
    "rebound_10",
    "rebound_60",
    "ma_dist_20",
    "ma_dist_50",
    "ma_dist_200",
    "ma_20_50",
    "ma_50_200",
    "vix_level",
    "vix_chg_1",
    "vix_chg_5",
    "vix_rel_20",
    "vix_minus_vol_21",
    "vix_is_proxy",
    *(f"regime_{r}" for r in REGIMES),
)

RETURN_HORIZONS: Final = (1, 5, 10, 20, 60)
VOL_WINDOWS: Final = (5, 10, 21, 63)
SKEW_WINDOWS: Final = (21, 63)
PARKINSON_WINDOW: Final = 21
RSI_N: Final = 14
ATR_N: Final = 14
STOCH_N: Final = 14
E12_N: Final = 12
E26_N: Final = 26
SIG_N: Final = 9
BB_N: Final = 20
VOLUME_N: Final = 20
EXTREME_WINDOWS: Final = (10, 60)
MA_WINDOWS: Final = (20, 50, 200)
VIX_MEAN_N: Final = 20

#: Bars a year, to annualise per-bar volatility (daily bars).
ANNUAL: Final = 252
#: Annualisation with the sample (n - 1) correction, applied to the population variance.
VOL_FACTOR: Final = {w: ANNUAL * w / (w - 1) for w in VOL_WINDOWS}
#: Parkinson's range estimator: variance = mean(ln(H/L)^2) / (4 ln 2), annualised.
PARKINSON_FACTOR: Final = ANNUAL / (4.0 * math.log(2.0))

#: Smoothing weights: EMA alpha = 2 / (n + 1); Wilder alpha = 1 / n.
E12_A: Final = 2.0 / (E12_N + 1)
E26_A: Final = 2.0 / (E26_N + 1)
SIG_A: Final = 2.0 / (SIG_N + 1)
RSI_A: Final = 1.0 / RSI_N
ATR_A: Final = 1.0 / ATR_N

#: Bar index (0-based) at which the MACD signal line gets its seed: the MACD line starts at
#: bar 25 (the slow EMA's seed) and the signal averages its first 9 values.
MACD_READY: Final = E26_N - 1 + SIG_N - 1

#: A window of 1-bar log returns whose population variance is at most this (a per-bar
#: standard deviation of 1e-8, a millionth of a percent) is flat: volatility and skew are 0.
FLAT_VAR: Final = 1e-16
#: A window of closes or volumes whose variance is at most this times its squared mean (a
#: standard deviation of a millionth of the mean) is flat: its z-score is 0 and %b is 0.5.
FLAT_REL2: Final = 1e-12

#: Length of the per-event ring buffers: a power of two longer than the longest look-back (200
#: bars). Bar i sits in slot i & (RING - 1); a restored state keeps the last RING bars.
RING: Final = 256

#: Consecutive known VIX readings a row needs (its own and the 19 before, for the 20-bar mean).
VIX_RUN: Final = VIX_MEAN_N
#: Bars before the first row of a symbol: the 200-bar moving average needs 200 closes.
WARMUP: Final = (
    max(
        max(MA_WINDOWS),
        max(RETURN_HORIZONS) + 1,
        max(VOL_WINDOWS) + 1,
        max(EXTREME_WINDOWS),
        MACD_READY + 1,
        VIX_RUN,
    )
    - 1
)

#: The one-hot encoding of each regime, in `REGIMES` order.
ONE_HOT: Final = {r: tuple(1.0 if r == other else 0.0 for other in REGIMES) for r in REGIMES}


def warmup_bars() -> int:
    """Bars of history a row needs before it: a symbol's first `warmup_bars()` bars give no row.

    With clean input (a regime and a VIX reading on every bar) the first row is bar number
    `warmup_bars()` (0-based), so exactly that many bars are withheld.
    """
    return WARMUP


def bad_bar_message(
    where: object, open_: object, high: object, low: object, close: object, volume: object
) -> str:
    """Name the first bad field of a bar: prices must be positive and finite, volume >= 0."""
    for name, value in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if not (isinstance(value, int | float) and 0.0 < value < math.inf):
            return f"bar {where}: {name} {value!r} is not a positive finite price"
    return f"bar {where}: volume {volume!r} is not a finite number >= 0"


def bad_regime_message(where: object, regime: object) -> str:
    """Say that a regime label is not one of the five."""
    return f"bar {where}: regime {regime!r} is not one of {', '.join(REGIMES)}"


def return_moments(s: Any) -> tuple[Any, ...]:
    """(m5, m10, m21, t21, m63, t63): the variance (m) and third central moment (t) of the log
    returns over each window, from the running sums `s` of the per-event path (floats) and of
    the bank (arrays, a symbol per column) alike: the same operations in the same order, so
    both get the same values bit for bit."""
    n5 = s[0] / 5
    m5 = s[1] / 5 - n5 * n5
    n10 = s[2] / 10
    m10 = s[3] / 10 - n10 * n10
    n21 = s[4] / 21
    b = s[5] / 21
    m21 = b - n21 * n21
    t21 = s[6] / 21 - n21 * (3.0 * b - 2.0 * n21 * n21)
    n63 = s[7] / 63
    b = s[8] / 63
    m63 = b - n63 * n63
    t63 = s[9] / 63 - n63 * (3.0 * b - 2.0 * n63 * n63)
    return m5, m10, m21, t21, m63, t63


def level_moments(s: Any, anc: Any) -> tuple[Any, ...]:
    """(pk, mc, ma20, bvar, ma50, ma200, mv, vm, vvar): the Parkinson term; the 20-bar close
    mean off its anchor, the mean itself and its variance; the 50- and 200-bar means; the
    20-bar volume mean off its anchor, the mean and its variance. Floats or arrays alike, as
    `return_moments`."""
    pk = s[10] / 21
    mc = s[11] / 20
    ma20 = anc[0] + mc
    bvar = s[12] / 20 - mc * mc
    ma50 = s[13] / 50
    ma200 = s[14] / 200
    mv = s[15] / 20
    vm = anc[1] + mv
    vvar = s[16] / 20 - mv * mv
    return pk, mc, ma20, bvar, ma50, ma200, mv, vm, vvar
