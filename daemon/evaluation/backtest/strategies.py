"""The exposure rules of `regimed backtest`: each turns what is known at a bar's close into the
exposure held through the next bar (`daemon.evaluation.backtest.ledger`).

- `buy_and_hold`: always fully exposed;
- `regimes`: the rule regimes alone: at `reduced` while the regime known at the close is
  `crash` or `high_volatility`, fully exposed otherwise;
- `model_*`: a walk-forward model's call (`model_exposure`): for the direction target fully
  exposed when it predicts up (the soft vote's probability of up above 0.5), at `reduced`
  otherwise; for the volatility and drawdown targets at `reduced` when it predicts rising
  volatility or a drawdown (label 1), fully exposed otherwise;
- `volatility_target`: target volatility / the trailing realised volatility, capped at 1;
- `volatility_target_model` (volatility target only): the same with the model's forecast, the
  trailing volatility scaled by `rising` where the model predicts rising volatility and by
  `falling` where it does not (`model_volatility`).

>>> import numpy as np
>>> regime_exposure(np.array(["normal", "crash", "recovery", "high_volatility"]), 0.25).tolist()
[1.0, 0.25, 1.0, 0.25]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from daemon.evaluation.backtest.ledger import TRADING_DAYS, Floats

__all__ = [
    "RISK_OFF",
    "TARGETS",
    "direction_exposure",
    "model_exposure",
    "model_volatility",
    "regime_exposure",
    "trailing_volatility",
    "volatility_exposure",
]

#: Regimes in which the rule steps out.
RISK_OFF: tuple[str, ...] = ("crash", "high_volatility")
#: Label targets whose predictions the backtest can turn into exposure.
TARGETS: tuple[str, ...] = ("direction", "volatility", "drawdown")


def regime_exposure(regimes: npt.ArrayLike, reduced: float) -> Floats:
    """`reduced` on the bars whose regime is in `RISK_OFF`, 1 on the others."""
    r = np.asarray(regimes)
    return np.where(np.isin(r, RISK_OFF), reduced, 1.0).astype(np.float64)


def direction_exposure(predicted_up: npt.ArrayLike, reduced: float) -> Floats:
    """1 where the model predicts up (label 1), `reduced` where it predicts down."""
    p = np.asarray(predicted_up)
    return np.where(p == 1, 1.0, reduced).astype(np.float64)


def model_exposure(target: str, predicted: npt.ArrayLike, reduced: float) -> Floats:
    """A model's calls (label 1 or 0) as exposure: for `direction` 1 means up (fully exposed),
    for `volatility` and `drawdown` 1 means rising volatility or a drawdown ahead (`reduced`).

    >>> model_exposure("drawdown", [1, 0], 0.0).tolist()
    [0.0, 1.0]
    """
    if target == "direction":
        return direction_exposure(predicted, reduced)
    p = np.asarray(predicted)
    return np.where(p == 1, reduced, 1.0).astype(np.float64)


def model_volatility(
    trailing: npt.ArrayLike, rising: npt.ArrayLike, up: float, down: float
) -> Floats:
    """The volatility forecast of a model of the volatility target: the trailing volatility
    times `up` where the model predicts rising volatility (label 1), times `down` elsewhere."""
    t = np.asarray(trailing, dtype=np.float64)
    return np.where(np.asarray(rising) == 1, t * up, t * down).astype(np.float64)


def trailing_volatility(closes: npt.ArrayLike, window: int) -> Floats:
    """At each close, the annualised standard deviation of the last `window` daily log
    returns up to and including that close's (NaN until there are `window` of them)."""
    c = np.asarray(closes, dtype=np.float64)
    out = np.full(len(c), np.nan)
    log_ret = np.log(c[1:] / c[:-1])
    if len(log_ret) >= window:
        windows = np.lib.stride_tricks.sliding_window_view(log_ret, window)
        out[window:] = windows.std(axis=1, ddof=1) * math.sqrt(TRADING_DAYS)
    return out


def volatility_exposure(forecast: npt.ArrayLike, target: float) -> Floats:
    """target / forecast, capped at 1; fully exposed where there is no forecast yet, and
    where the forecast is 0 (prices that did not move)."""
    f = np.asarray(forecast, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(f > 0.0, target / f, 1.0)
    return np.asarray(np.minimum(np.nan_to_num(scaled, nan=1.0), 1.0), dtype=np.float64)
