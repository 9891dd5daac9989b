"""The live report (`regimed report --live`) as one self-contained HTML page: the champions'
live predictions against their matured labels, overall, per regime, per model version and per
week or month, with balanced accuracy first and its 95% bootstrap interval.

Like the other reports the page loads nothing and runs no script; its one figure is SVG
written here (daemon.report.svg). A group with too few matured predictions shows its count and
a grey "n/a", never a 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon import __version__
from daemon.domain import REGIMES
from daemon.report.evaluation import _Plot
from daemon.report.live import MIN_ROWS, Cell, LiveReport
from daemon.report.svg import CSS, MUTED, SERIES
from daemon.report.svg import escape as _e

__all__ = ["render_live_html"]

#: One colour per regime in the figure, as the dashboard draws them.
_REGIME_COLOURS = {
    "crash": "#e53e3e",
    "recovery": "#805ad5",
    "high_volatility": "#dd6b20",
    "normal": "#38a169",
    "low_volatility": "#3182ce",
}


def render_live_html(report: LiveReport) -> str:
    """The live `report` (`live_report`) as one HTML page."""
    title = "regimed live predictions"
    body = [
        f"<h1>{_e(title)}</h1>",
        _meta(report),
        _headline(report),
        "<h2>Per regime</h2>",
        _regime_table(report),
        "<h2>Over time</h2>",
        _over_time(report),
        "<h2>Model versions</h2>",
        _versions_table(report),
        f'<p class="meta">written by regimed {_e(__version__)}</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _td(value: float | None, spec: str = ".3f") -> str:
    return '<td class="na">n/a</td>' if value is None else f"<td>{format(value, spec)}</td>"


def _ci(cell: Cell) -> str:
    ci = cell["ci95"]
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _meta(report: LiveReport) -> str:
    window = f"{report['first_day']} to {report['last_day']}"
    since = "" if report["since"] is None else f" (from --since {report['since']})"
    champion = report["champion"] or "none"
    return (
        f'<p class="meta">Predictions of {_e(window)}{_e(since)}; current champion '
        f"<code>{_e(champion)}</code>. Each prediction was made by the champion of its day and "
        "counts once its label has matured (label.horizon_bars bars later). Balanced accuracy "
        "is the mean of the recalls of up and down: 0.5 for any model that always says the "
        f"same. Intervals: 95% moving-block bootstrap over trading days "
        f"({report['bootstrap']['samples']} resamples, blocks of "
        f"{report['bootstrap']['block_days']} days). Groups of fewer than {MIN_ROWS} matured "
        "predictions show their count only.</p>"
    )


def _headline(report: LiveReport) -> str:
    cell = report["overall"]
    return (
        f'<p class="headline">{report["matured"]:,} matured predictions '
        f"({report['pending']:,} waiting for their label): balanced accuracy "
        f"<strong>{_fmt(cell['balanced_accuracy'])}</strong> {_ci(cell)}, accuracy "
        f"{_fmt(cell['accuracy'])} (always up would score {_fmt(cell['up_share'])}).</p>"
    )


def _regime_table(report: LiveReport) -> str:
    head = (
        "<tr><th>regime</th><th>matured</th><th>balanced accuracy</th><th>95% interval</th>"
        "<th>accuracy</th><th>up share</th></tr>"
    )
    rows = [(regime, report["per_regime"][regime]) for regime in REGIMES] + [
        ("overall", report["overall"])
    ]
    body = "".join(
        f"<tr><td>{_e(name)}</td><td>{cell['n']:,}</td>{_td(cell['balanced_accuracy'])}"
        f"<td>{_ci(cell)}</td>{_td(cell['accuracy'])}{_td(cell['up_share'])}</tr>"
        for name, cell in rows
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _over_time(report: LiveReport) -> str:
    periods = report["periods"]
    unit = report["period"]
    head = "".join(f"<th>{_e(r)}</th>" for r in (*REGIMES, "overall"))
    body = "".join(
        f"<tr><td>{_e(p['period'])}</td>"
        + "".join(_period_cell(p["per_regime"][r]) for r in REGIMES)
        + _period_cell(p["overall"])
        + "</tr>"
        for p in periods
    )
    caption = (
        f"Balanced accuracy per regime and {unit}, with its 95% interval (the whisker); the "
        "dashed line is a coin flip (0.5). A missing dot: fewer than "
        f"{MIN_ROWS} matured predictions of that regime in that {unit}, or one true label only."
    )
    return (
        f"<figure>{over_time_plot(report)}<figcaption>{_e(caption)}</figcaption></figure>"
        f"<table><thead><tr><th>{_e(unit)}</th>{head}</tr></thead><tbody>{body}</tbody></table>"
        f'<p class="meta">Cells: balanced accuracy (matured predictions).</p>'
    )


def _period_cell(cell: Cell) -> str:
    value = cell["balanced_accuracy"]
    text = "n/a" if value is None else f"{value:.3f}"
    css = ' class="na"' if value is None else ""
    return f"<td{css}>{text} ({cell['n']})</td>"


def over_time_plot(report: LiveReport) -> str:
    """One strip per regime (and overall): a dot per period at its balanced accuracy, the
    whisker its 95% interval, the y axis from 0 to 1 with the coin flip dashed."""
    periods = report["periods"]
    svg = _Plot(f"Live balanced accuracy per regime and {report['period']}")
    label_w, plot_w, strip_h, gap = 120.0, 600.0, 60.0, 14.0
    n = max(len(periods), 1)
    step = plot_w / n

    def px(i: int) -> float:
        return label_w + (i + 0.5) * step

    y = 8.0
    strips: Sequence[str] = (*REGIMES, "overall")
    for regime in strips:
        colour = _REGIME_COLOURS.get(regime, SERIES[0])

        def py(v: float, top: float = y) -> float:
            return top + strip_h - min(max(v, 0.0), 1.0) * strip_h

        svg.rect(label_w, y, plot_w, strip_h, "#f7fafc")
        svg.text(label_w - 8, y + strip_h / 2 + 4, regime, anchor="end", bold=regime == "overall")
        for tick in (0.0, 0.5, 1.0):
            svg.text(label_w + plot_w + 6, py(tick) + 4, f"{tick:.1f}", size=9, fill=MUTED)
        svg.stroke(label_w, py(0.5), label_w + plot_w, py(0.5), "#a0aec0", 1)
        for i, period in enumerate(periods):
            cell = period["overall"] if regime == "overall" else period["per_regime"][regime]
            value = cell["balanced_accuracy"]
            if value is None:
                continue
            if cell["ci95"] is not None:
                low, high = cell["ci95"]
                svg.stroke(px(i), py(low), px(i), py(high), colour)
            tip = f"{regime}, {period['period']}: {value:.3f} {_ci(cell)}, n={cell['n']}"
            svg.rect(px(i) - 3, py(value) - 3, 6, 6, colour, tip)
        y += strip_h + gap
    every = max(1, -(-len(periods) // 10))  # at most about ten labels
    for i, period in enumerate(periods):
        if i % every == 0:
            svg.text(px(i), y + 2, period["period"], anchor="middle", size=10)
    return svg.render()


def _versions_table(report: LiveReport) -> str:
    head = (
        "<tr><th>version</th><th>first day</th><th>last day</th><th>predictions</th>"
        "<th>matured</th><th>balanced accuracy</th><th>accuracy</th></tr>"
    )
    body = "".join(
        f"<tr><td><code>{_e(version)}</code>"
        + (" (champion)" if version == report["champion"] else "")
        + f"</td><td>{_e(row['first_day'])}</td><td>{_e(row['last_day'])}</td>"
        f"<td>{row['predictions']:,}</td><td>{row['matured']:,}</td>"
        f"{_td(row['balanced_accuracy'])}{_td(row['accuracy'])}</tr>"
        for version, row in report["versions"].items()
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
