"""The diagnostics figures of the retrain report page (daemon.report.retrain_html): the
ensemble's reliability diagram with its Brier score, the per-regime scores with their 95%
intervals, the market symbol's price over the validation period with its regimes as colour
bands, and the rolling balanced accuracy per regime. Hand-written SVG (daemon.report.svg):
a few hundred numbers each, axes on round values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from daemon.report.retrain_plots import _figure, _missing
from daemon.report.svg import INK, MUTED, Svg, date_ticks, mix, ticks
from daemon.report.svg import escape as _e
from daemon.training.report import RetrainReport
from daemon.training.report_diagnostics import Calibration, Rolling, Timeline

__all__ = ["calibration_figure", "intervals_table", "rolling_figure", "timeline_figure"]

#: One colour per regime for lines and bands (bands are these blended into white).
REGIME_COLOUR = {
    "crash": "#c53030",
    "recovery": "#2f855a",
    "high_volatility": "#dd6b20",
    "normal": "#4c78a8",
    "low_volatility": "#805ad5",
    "overall": INK,
}


def _colour(regime: str) -> str:
    return REGIME_COLOUR.get(regime, MUTED)


def _polyline(svg: Svg, points: Sequence[tuple[float, float]], colour: str, tip: str) -> None:
    if len(points) < 2:
        for x, y in points:
            svg.rect(x - 2, y - 2, 4, 4, colour, tip)
        return
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    svg.parts.append(
        f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6">'
        f"<title>{_e(tip)}</title></polyline>"
    )


def _y_axis(
    svg: Svg, values: Sequence[float], py: Callable[[float], float], left: float, right: float
) -> None:
    """Round tick values on the left with faint grid lines across."""
    for v in values:
        y = py(v)
        svg.parts.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="#edf2f7"/>'
        )
        svg.text(left - 6, y + 4, f"{v:g}", anchor="end", size=10, fill=MUTED)


def _x_dates(svg: Svg, days: Sequence[str], px: Callable[[int], float], bottom: float) -> None:
    for i, label in date_ticks(days):
        svg.line(px(i), bottom, px(i), bottom + 4)
        svg.text(px(i), bottom + 16, label, anchor="middle", size=10, fill=MUTED)


def _legend(svg: Svg, x: float, names: Sequence[str], colour: Callable[[str], str]) -> None:
    for name in names:
        svg.rect(x, 4, 10, 10, colour(name))
        svg.text(x + 14, 13, name, size=11)
        x += 30 + 7 * len(name)


def calibration_figure(report: RetrainReport) -> str:
    """The reliability diagram: each bin's mean probability of 1 against the share of 1s, the
    diagonal of perfect calibration, and the rows per bin as bars underneath."""
    diagnostics = report.diagnostics
    cal: Calibration | None = None if diagnostics is None else diagnostics.calibration
    if cal is None or not cal.bins:
        return _missing("calibration")
    svg = Svg("Reliability diagram of the ensemble on the validation rows")
    left, top, size, hist_h = 48.0, 10.0, 260.0, 60.0

    def px(v: float) -> float:
        return left + v * size

    def py(v: float) -> float:
        return top + size - v * size

    axis = ticks(0.0, 1.0)
    _y_axis(svg, axis, py, left, left + size)
    for v in axis:
        svg.text(px(v), top + size + 14, f"{v:g}", anchor="middle", size=10, fill=MUTED)
    svg.parts.append(
        f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(1):.1f}" y2="{py(1):.1f}" '
        'stroke="#a0aec0" stroke-dasharray="4 3"/>'
    )
    if cal.base_rate is not None:
        y = py(cal.base_rate)
        svg.parts.append(
            f'<line x1="{px(0):.1f}" y1="{y:.1f}" x2="{px(1):.1f}" y2="{y:.1f}" '
            'stroke="#dd6b20" stroke-dasharray="2 3"><title>base rate</title></line>'
        )
    svg.text(left + 6, top + 14, "share of 1s", size=10, fill=MUTED)  # the empty upper left
    filled = [b for b in cal.bins if b.n and b.mean_probability is not None]
    points = [(px(b.mean_probability or 0), py(b.observed or 0)) for b in filled]
    _polyline(svg, points, "#2b6cb0", "ensemble")
    for b, (x, y) in zip(filled, points, strict=True):
        tip = (
            f"p in [{b.low:g}, {b.high:g}): {b.n:,} rows, mean p {b.mean_probability:.3f}, "
            f"share of 1s {b.observed:.3f}"
        )
        svg.rect(x - 3, y - 3, 6, 6, "#2b6cb0", tip)
    peak = max((b.n for b in cal.bins), default=1) or 1
    base = top + size + 24 + hist_h
    for b in cal.bins:
        h = b.n / peak * hist_h
        svg.rect(px(b.low) + 1, base - h, (b.high - b.low) * size - 2, h, "#a3bffa", f"{b.n:,}")
    svg.text(left + size / 2, base + 16, "probability of 1 (bars: rows per bin)", anchor="middle",
             size=10, fill=MUTED)  # fmt: skip
    brier = "n/a" if cal.brier is None else f"{cal.brier:.4f}"
    naive = "n/a" if cal.reference_brier is None else f"{cal.reference_brier:.4f}"
    rate = "n/a" if cal.base_rate is None else f"{cal.base_rate:.3f}"
    return _figure(
        svg.render(),
        f"Share of label 1 against the ensemble's probability, in bins of width 0.1; on the "
        f"dashed diagonal a probability means what it says. Brier score {brier} against "
        f"{naive} for forecasting the base rate ({rate}, dotted) everywhere: lower is better.",
    )


def intervals_table(report: RetrainReport) -> str:
    """The ensemble's per-regime scores with their 95% block-bootstrap intervals."""
    diagnostics, validation = report.diagnostics, report.validation
    if diagnostics is None or validation is None or not diagnostics.intervals:
        return _missing("per-regime intervals")
    rows = []
    for regime in diagnostics.intervals:
        cell = (
            validation.ensemble.total if regime == "overall" else validation.ensemble.regime(regime)
        )
        n = "n/a" if cell.n is None else f"{cell.n:,}"
        rows.append(
            f"<tr><td>{_e(regime)}</td><td>{n}</td>"
            + _with_interval(
                cell.balanced_accuracy, diagnostics.interval(regime, "balanced_accuracy")
            )
            + _with_interval(cell.accuracy, diagnostics.interval(regime, "accuracy"))
            + "</tr>"
        )
    return (
        "<table><tr><th>regime</th><th>n</th><th>balanced accuracy [95%]</th>"
        f"<th>accuracy [95%]</th></tr>{''.join(rows)}</table>"
        '<p class="meta">Intervals from the gate\'s moving-block bootstrap over trading '
        "days; none where a regime has too few rows to score.</p>"
    )


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return '<td class="na">n/a</td>'
    ci = "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f'<td class="day">{value:.3f}{ci}</td>'


def _bands(
    svg: Svg, line: Timeline, px: Callable[[int], float], top: float, height: float
) -> list[str]:
    """A colour band behind each regime run; the regimes drawn, for the legend."""
    index = {d: i for i, d in enumerate(line.days)}
    seen: list[str] = []
    for run in line.runs:
        first = next((i for d, i in index.items() if d >= run.first), None)
        last = max((i for d, i in index.items() if d <= run.last), default=None)
        if first is None or last is None or last < first:
            continue
        right = px(min(last + 1, len(line.days) - 1)) if last + 1 < len(line.days) else px(last)
        width = max(right - px(first), 1.0)
        tip = f"{run.regime}: {run.first} to {run.last}"
        svg.rect(px(first), top, width, height, mix(_colour(run.regime), 0.25), tip)
        if run.regime not in seen:
            seen.append(run.regime)
    return seen


def timeline_figure(report: RetrainReport) -> str:
    """The market symbol's close over the validation period on its regimes' colour bands."""
    line = None if report.diagnostics is None else report.diagnostics.timeline
    if line is None or len(line.days) < 2:
        return _missing("market timeline (no bars of the market symbol in the validation period)")
    svg = Svg(f"{line.symbol or 'market'} over the validation period, by regime")
    left, top, w, h = 56.0, 24.0, 660.0, 220.0
    n = len(line.days) - 1
    axis = ticks(min(line.close), max(line.close))
    lo, hi = axis[0], axis[-1] if axis[-1] > axis[0] else axis[0] + 1

    def px(i: int) -> float:
        return left + i / n * w

    def py(v: float) -> float:
        return top + h - (v - lo) / (hi - lo) * h

    regimes = _bands(svg, line, px, top, h)
    _y_axis(svg, axis, py, left, left + w)
    _x_dates(svg, line.days, px, top + h)
    svg.line(left, top + h, left + w, top + h)
    points = [(px(i), py(c)) for i, c in enumerate(line.close)]
    _polyline(svg, points, INK, f"{line.symbol} close")
    _legend(svg, left, regimes, lambda r: mix(_colour(r), 0.25))
    return _figure(
        svg.render(),
        f"Close of {_e(line.symbol or 'the market symbol')} over the validation period; the "
        "background is each day's regime.",
    )


def rolling_figure(report: RetrainReport) -> str:
    """The ensemble's balanced accuracy per regime over a trailing window of validation days."""
    rolling: Rolling | None = None if report.diagnostics is None else report.diagnostics.rolling
    if rolling is None or not rolling.balanced_accuracy or len(rolling.days) < 2:
        return _missing("rolling balanced accuracy")
    svg = Svg("Rolling balanced accuracy per regime")
    left, top, w, h = 48.0, 24.0, 660.0, 200.0
    values = [v for s in rolling.balanced_accuracy.values() for v in s if v is not None]
    axis = ticks(min([*values, 0.4]), max([*values, 0.6]))
    lo, hi = axis[0], axis[-1]
    n = len(rolling.days) - 1

    def px(i: int) -> float:
        return left + i / n * w

    def py(v: float) -> float:
        return top + h - (v - lo) / (hi - lo) * h

    _y_axis(svg, axis, py, left, left + w)
    svg.parts.append(
        f'<line x1="{left:.1f}" y1="{py(0.5):.1f}" x2="{left + w:.1f}" y2="{py(0.5):.1f}" '
        'stroke="#a0aec0" stroke-dasharray="4 3"><title>coin flip</title></line>'
    )
    _x_dates(svg, rolling.days, px, top + h)
    svg.line(left, top + h, left + w, top + h)
    for name, series in rolling.balanced_accuracy.items():
        segment: list[tuple[float, float]] = []
        for i, v in enumerate([*series, None]):
            if v is None:
                _polyline(svg, segment, _colour(name), name)
                segment = []
            else:
                segment.append((px(i), py(v)))
    _legend(svg, left, list(rolling.balanced_accuracy), _colour)
    window = "n/a" if rolling.window_days is None else f"{rolling.window_days}"
    return _figure(
        svg.render(),
        f"The ensemble's balanced accuracy over the trailing {window} validation days, per "
        "regime and overall; a gap where the window holds too few rows of a regime (or one "
        "label only). The dashed line is a coin flip (0.5).",
    )
