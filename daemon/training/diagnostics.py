"""The retrain report's diagnostics computed from the validation rows (see
`daemon.training.report_diagnostics` for what each part says): reliability bins and Brier
scores, per-regime block-bootstrap intervals (the gate's `Resampler`), the market symbol's
timeline and the rolling balanced accuracy per regime. Each is aggregated here so the report
holds bins, runs and sampled points, never the rows themselves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.domain import REGIMES
from daemon.training.report_diagnostics import (
    Calibration,
    CalibrationBin,
    RegimeRun,
    Rolling,
    Timeline,
)
from daemon.training.scoring import Resampler

__all__ = ["calibration", "regime_intervals", "rolling", "timeline"]

#: Reliability bins of equal width over [0, 1].
CALIBRATION_BINS = 10
#: At most this many sampled days of price in the timeline, and of points in the rolling curve.
MAX_POINTS = 400
ROLLING_POINTS = 80
#: The rolling balanced accuracy's trailing window (a quarter of trading days) and the fewest
#: rows of a regime in that window it is drawn for.
ROLLING_WINDOW_DAYS = 63
ROLLING_MIN_ROWS = 20


def _round(value: float) -> float:
    return round(float(value), 6)


def calibration(
    y: npt.ArrayLike, proba: npt.ArrayLike, bins: int = CALIBRATION_BINS
) -> Calibration:
    """Reliability bins of the probabilities `proba` of label 1 against the labels `y`, the
    Brier score and the base rate's Brier, base_rate * (1 - base_rate).

    >>> c = calibration([0, 1, 1, 0], [0.05, 0.95, 0.65, 0.35], bins=2)
    >>> [b.n for b in c.bins], c.base_rate, c.reference_brier
    ([2, 2], 0.5, 0.25)
    """
    truth = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    if len(truth) == 0:
        return Calibration()
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    n = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=truth, minlength=bins)
    out = []
    for k in range(bins):
        count = int(n[k])
        out.append(
            CalibrationBin(
                _round(k / bins),
                _round((k + 1) / bins),
                count,
                _round(sum_p[k] / count) if count else None,
                _round(sum_y[k] / count) if count else None,
            )
        )
    rate = float(truth.mean())
    return Calibration(
        tuple(out),
        _round(float(np.mean((p - truth) ** 2))),
        _round(rate * (1 - rate)),
        _round(rate),
    )


def regime_intervals(
    y: npt.ArrayLike,
    pred: npt.ArrayLike,
    regimes: npt.ArrayLike,
    days: npt.ArrayLike,
    *,
    min_n: int,
    n_resamples: int,
    block_days: int,
    seed: int,
) -> dict[str, dict[str, tuple[float, float] | None]]:
    """The 95% moving-block bootstrap interval (the gate's resampling) of accuracy and
    balanced accuracy of the calls `pred`, per regime of `REGIMES` and "overall"; a group
    with fewer than `min_n` rows gets none, as its score is null."""
    truth, calls = np.asarray(y), np.asarray(pred)
    groups, day = np.asarray(regimes).astype(str), np.asarray(days)
    out: dict[str, dict[str, tuple[float, float] | None]] = {}
    for name in (*REGIMES, "overall"):
        rows = np.ones(len(truth), dtype=bool) if name == "overall" else groups == name
        if rows.sum() == 0 or rows.sum() < min_n:
            out[name] = {"accuracy": None, "balanced_accuracy": None}
            continue
        boot = Resampler(truth[rows], day[rows], n_resamples, block_days, seed)
        out[name] = {
            metric: _rounded(boot.interval(boot.labels(metric, calls[rows])))
            for metric in ("accuracy", "balanced_accuracy")
        }
    return out


def _rounded(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if interval is None else (_round(interval[0]), _round(interval[1]))


def timeline(symbol: str, bars: pd.DataFrame) -> Timeline:
    """The market symbol's closes (at most `MAX_POINTS` evenly sampled days, the last one
    always kept) and its regime runs over `bars` (its stored bars of the validation period)."""
    if bars.empty:
        return Timeline(symbol)
    days = bars["ts"].to_numpy(dtype="datetime64[D]").astype(str)
    close = bars["close"].to_numpy(dtype=np.float64)
    regimes = bars["regime"].astype(str).to_numpy()
    keep = np.unique(np.linspace(0, len(days) - 1, min(len(days), MAX_POINTS)).round().astype(int))
    runs: list[RegimeRun] = []
    start = 0
    for i in range(1, len(days) + 1):
        if i == len(days) or regimes[i] != regimes[start]:
            runs.append(RegimeRun(str(days[start]), str(days[i - 1]), str(regimes[start])))
            start = i
    return Timeline(
        symbol,
        tuple(str(d) for d in days[keep]),
        tuple(float(f"{c:.6g}") for c in close[keep]),
        tuple(runs),
    )


def rolling(
    y: npt.ArrayLike,
    pred: npt.ArrayLike,
    regimes: npt.ArrayLike,
    days: npt.ArrayLike,
    *,
    window_days: int,
    min_n: int,
) -> Rolling:
    """Balanced accuracy per regime (and "overall") over the trailing `window_days` distinct
    validation days, at up to `ROLLING_POINTS` evenly spaced days; None where the window has
    fewer than `min_n` rows of the regime or one label only."""
    truth, calls = np.asarray(y).astype(np.int64), np.asarray(pred).astype(np.int64)
    groups = np.asarray(regimes).astype(str)
    unique, day_index = np.unique(np.asarray(days), return_inverse=True)
    if len(unique) == 0:
        return Rolling(window_days)
    day_index = day_index.ravel()
    m = len(unique)
    points = np.unique(np.linspace(0, m - 1, min(m, ROLLING_POINTS)).round().astype(int))
    series: dict[str, tuple[float | None, ...]] = {}
    for name in (*REGIMES, "overall"):
        rows = np.ones(len(truth), dtype=bool) if name == "overall" else groups == name
        counts = []
        for selected in (
            truth == 1,
            truth == 0,
            (truth == 1) & (calls == 1),
            (truth == 0) & (calls == 0),
        ):
            per_day = np.bincount(day_index[rows & selected], minlength=m)
            counts.append(np.concatenate([[0], np.cumsum(per_day)]))
        values: list[float | None] = []
        for end in points:
            lo, hi = max(0, end + 1 - window_days), end + 1
            pos, neg, tp, tn = (int(c[hi] - c[lo]) for c in counts)
            if pos + neg < min_n or pos == 0 or neg == 0:
                values.append(None)
            else:
                values.append(_round(0.5 * (tp / pos + tn / neg)))
        if any(v is not None for v in values):
            series[name] = tuple(values)
    return Rolling(window_days, tuple(str(np.datetime64(unique[i], "D")) for i in points), series)
