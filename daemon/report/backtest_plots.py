"""The backtest report's figures, one set per symbol: equity on a log axis, drawdowns, and the
exposure held over time with the market's regime bands behind it.

Drawn with the report's SVG builder (`daemon.report.svg`), like the other reports. A few
thousand bars become at most `_COLUMNS` points per line: each point stands for a run of
consecutive bars (equity: its last value, drawdown: its deepest, exposure: its mean), so a page
stays small and the same input draws the same bytes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from daemon.evaluation.backtest.ledger import Floats
from daemon.evaluation.backtest.results import SymbolSeries
from daemon.report.svg import GAP, INK, MUTED, REGIME_SHADE, SERIES, Svg

__all__ = ["FIGURES", "figure"]

FIGURES = {
    "equity": "Equity of each strategy (1 at the first decision's close), log scale, after costs.",
    "drawdown": "Drawdown of each strategy: its fall from the running peak of its equity.",
    "exposure": "Exposure held through each bar (mean over the bars a point stands for), with "
    "the regime known at the close: crash red, high_volatility orange, recovery green.",
}
_COLOURS = (INK, *SERIES, "#e45756", "#72b7b2", "#9d755d", "#bab0ac")
_SHADE = REGIME_SHADE
#: Strategies drawn in the exposure figure (buy-and-hold is always 1).
_EXPOSED = ("regimes", "model_baseline", "model_all", "volatility_target")
_COLUMNS = 600
_LEFT, _TOP, _WIDTH, _HEIGHT = 56.0, 60.0, 640.0, 220.0


class _Chart(Svg):
    """`Svg` with the lines and axes of a time-series figure."""

    def path(self, points: Sequence[tuple[float, float]], colour: str, width: float) -> None:
        text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{text}" fill="none" stroke="{colour}" '
            f'stroke-width="{width:g}" stroke-linejoin="round"/>'
        )

    def legend(self, names: Sequence[str], colours: Sequence[str], y: float) -> None:
        x = _LEFT
        for name, colour in zip(names, colours, strict=True):
            if x + 30 + 7 * len(name) > _LEFT + _WIDTH:
                x, y = _LEFT, y + 14
            self.rect(x, y - 9, 10, 10, colour)
            self.text(x + 14, y, name, size=11)
            x += 30 + 7 * len(name)

    def years(self, days: Sequence[str], at: Callable[[int], float]) -> None:
        """Year ticks under the plot area."""
        seen = sorted({d[:4] for d in days})
        step = max(1, len(seen) // 10)
        for year in seen[::step]:
            first = next(k for k, d in enumerate(days) if d.startswith(year))
            self.text(at(first), _TOP + _HEIGHT + 14, year, anchor="middle", size=10, fill=MUTED)
        self.line(_LEFT, _TOP + _HEIGHT, _LEFT + _WIDTH, _TOP + _HEIGHT)


def _buckets(n: int) -> list[tuple[int, int]]:
    """Runs of consecutive positions 0..n-1, at most `_COLUMNS` of them."""
    k = min(n, _COLUMNS)
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _lines(
    title: str,
    days: Sequence[str],
    series: dict[str, Floats],
    reduce: Callable[[Floats], float],
    scale: tuple[float, float],
    ticks: Sequence[tuple[float, str]],
    transform: Callable[[float], float] = lambda v: v,
    shade: Sequence[str] = (),
) -> str:
    """One line per series over `days` (a series may be one shorter: it starts at day 1)."""
    svg = _Chart(title)
    n = len(days)
    lo, hi = (transform(scale[0]), transform(scale[1]))
    span = hi - lo or 1.0

    def px(i: float) -> float:
        return _LEFT + i / max(n - 1, 1) * _WIDTH

    def py(v: float) -> float:
        t = (min(max(transform(v), lo), hi) - lo) / span
        return _TOP + _HEIGHT - t * _HEIGHT

    svg.bands(shade, px, _TOP, _HEIGHT)
    for value, label in ticks:
        svg.rect(_LEFT, py(value), _WIDTH, 0.6, GAP)
        svg.text(_LEFT - 6, py(value) + 4, label, anchor="end", size=10)
    svg.years(days, px)
    colours = []
    for k, values in enumerate(series.values()):
        colour = _COLOURS[k % len(_COLOURS)]
        colours.append(colour)
        offset = n - len(values)
        points = [(px(offset + b - 1), py(reduce(values[a:b]))) for a, b in _buckets(len(values))]
        svg.path(points, colour, 1.8 if k == 0 else 1.3)
    svg.legend(
        [*series, *(r for r in _SHADE if r in set(shade))],
        [*colours, *(_SHADE[r] for r in _SHADE if r in set(shade))],
        14,
    )
    svg.width = max(svg.width, _LEFT + _WIDTH)
    svg.height = max(svg.height, _TOP + _HEIGHT + 18)
    return svg.render()


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    out = []
    for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1):
        v = 2.0**k
        if lo <= v <= hi:
            out.append((v, f"{v:g}"))
    return out or [(lo, f"{lo:.2f}"), (hi, f"{hi:.2f}")]


def figure(kind: str, series: SymbolSeries, symbol: str) -> str:
    """The `kind` figure ("equity", "drawdown" or "exposure", `FIGURES`) of one symbol."""
    days = series.days
    if kind == "equity":
        values = np.concatenate(list(series.equity.values()))
        lo, hi = float(values.min()) * 0.95, float(values.max()) * 1.05
        return _lines(
            f"{symbol}: equity (log scale)",
            days,
            series.equity,
            lambda v: float(v[-1]),
            (lo, hi),
            _log_ticks(lo, hi),
            transform=math.log,
        )
    if kind == "drawdown":
        falls = {n: e / np.maximum.accumulate(e) - 1.0 for n, e in series.equity.items()}
        lo = min(-0.05, float(min(f.min() for f in falls.values())) * 1.05)
        ticks = [(v, f"{100 * v:.0f}%") for v in np.linspace(0.0, lo, 5)]
        return _lines(
            f"{symbol}: drawdown", days, falls, lambda v: float(v.min()), (lo, 0.0), ticks
        )
    if kind == "exposure":
        held = {n: series.held[n] for n in _EXPOSED if n in series.held}
        ticks = [(v, f"{v:g}") for v in (0.0, 0.5, 1.0)]
        return _lines(
            f"{symbol}: exposure and regimes",
            days,
            held,
            lambda v: float(v.mean()),
            (0.0, 1.0),
            ticks,
            shade=series.regimes,
        )
    raise ValueError(f"unknown figure {kind!r}: expected one of {', '.join(FIGURES)}")
