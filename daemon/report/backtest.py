"""The backtest's report: a table for the terminal, `backtest.md` and `backtest.html` with the
equity, drawdown and exposure figures of every symbol (`daemon.report.backtest_plots`)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from daemon import __version__
from daemon.evaluation.backtest import Backtest, BacktestDocument
from daemon.evaluation.backtest.results import PeriodResult, StrategyResult
from daemon.report.backtest_plots import FIGURES, figure
from daemon.report.files import write_files
from daemon.report.svg import CSS

__all__ = ["render_html", "render_markdown", "render_text", "write_report"]

_HEAD = (
    "strategy",
    "CAGR",
    "vol",
    "Sharpe",
    "Sharpe - B&H [95%]",
    "Sortino",
    "max DD",
    "DD - B&H [95%]",
    "DD peak..trough",
    "Calmar",
    "turnover/yr",
    "in market",
)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _diff(value: float | None, ci: list[float] | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    scale, unit = (100.0, " pp") if percent else (1.0, "")
    text = f"{scale * value:+.2f}{unit}"
    return text if not ci else f"{text} [{scale * ci[0]:+.2f}, {scale * ci[1]:+.2f}]"


def _row(name: str, s: StrategyResult) -> list[str]:
    dd = s["max_drawdown"]
    return [
        name,
        _pct(s["cagr"]),
        _pct(s["volatility"]),
        _num(s["sharpe"]),
        _diff(s["sharpe_difference"], s["sharpe_difference_ci95"]),
        _num(s["sortino"]),
        _pct(dd["depth"]),
        _diff(s["max_drawdown_difference"], s["max_drawdown_difference_ci95"], percent=True),
        f"{dd['peak']}..{dd['trough']}",
        _num(s["calmar"]),
        _num(s["annual_turnover"], ".1f"),
        _pct(s["time_in_market"]),
    ]


def _overall(period: PeriodResult) -> list[list[str]]:
    return [list(_HEAD), *(_row(n, s) for n, s in period["strategies"].items())]


def _events(events: Sequence[PeriodResult]) -> list[list[str]]:
    """Total return / maximum drawdown of each strategy inside each event."""
    names = list(events[0]["strategies"]) if events else []
    rows = [["strategy", *(f"{e['name']} ({e['bars']} bars)" for e in events)]]
    for name in names:
        cells = []
        for e in events:
            s = e["strategies"][name]
            cells.append(f"{_pct(s['total_return'])} / {_pct(s['max_drawdown']['depth'])}")
        rows.append([name, *cells])
    return rows


def _settings_line(doc: BacktestDocument) -> str:
    s, d = doc["settings"], doc["data"]
    return (
        f"{d['source']} ({', '.join(d['symbols'])}), traded {d['first_day']}..{d['last_day']}; "
        f"target {s['target']}; {len(doc['folds'])} {s['step']}ly walk-forward folds from "
        f"{s['start']}, models {', '.join(s['models'])}; costs {s['cost_bps']:g} bps per unit "
        f"of turnover; risk-free {100 * s['risk_free']:g}%; reduced exposure "
        f"{s['reduced_exposure']:g}; volatility target {100 * s['target_volatility']:g}% on "
        f"{s['volatility_window_bars']} bars; 95% intervals from {s['bootstrap_samples']} "
        f"moving-block bootstrap resamples of {s['block_days']} bars"
    )


def _text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render_text(doc: BacktestDocument) -> str:
    """Per symbol: every strategy's figures over the whole period, then its total return and
    maximum drawdown inside each archive event: what `regimed backtest` prints."""
    lines = [f"backtest: {_settings_line(doc)}", ""]
    for symbol, result in doc["symbols"].items():
        o = result["overall"]
        lines.append(f"{symbol}: {o['start_close']}..{o['last_day']} ({o['bars']} bars)")
        lines += _text_table(_overall(o))
        if result["events"]:
            lines += ["", f"{symbol} inside the archive events (total return / max drawdown):"]
            lines += _text_table(_events(result["events"]))
        lines.append("")
    return "\n".join(lines)


def _md_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|---" + "|---:" * (len(rows[0]) - 1) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def render_markdown(doc: BacktestDocument) -> str:
    """`backtest.md`: the settings, the strategies, and per symbol the tables of the whole
    period and of the archive events, with links to the figures."""
    lines = ["# Backtest: regime- and model-driven exposure against buy-and-hold", ""]
    lines += [_settings_line(doc) + ".", "", "## Strategies", ""]
    lines += [f"- `{n}`: {text}" for n, text in doc["strategies"].items()]
    for symbol, result in doc["symbols"].items():
        o = result["overall"]
        lines += ["", f"## {symbol}, {o['start_close']}..{o['last_day']} ({o['bars']} bars)", ""]
        lines += _md_rows(_overall(o))
        if result["events"]:
            lines += ["", "Inside the archive events (total return / maximum drawdown):", ""]
            lines += _md_rows(_events(result["events"]))
        lines.append("")
        for kind, caption in FIGURES.items():
            lines += [f"![{caption}]({_file(symbol, kind)})", ""]
    lines += [f"Took {doc['duration_seconds']:.0f} s (regimed {__version__}).", ""]
    return "\n".join(lines)


def _file(symbol: str, kind: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in symbol).strip("_") or "symbol"
    return f"{safe}_{kind}.svg"


def _html_rows(rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(result: Backtest) -> str:
    """`backtest.html`: the tables and, per symbol, the three figures in one offline page."""
    doc = result.doc
    body = [
        "<h1>Backtest: regime- and model-driven exposure against buy-and-hold</h1>",
        f'<p class="meta">{html.escape(_settings_line(doc))}.</p>',
        "<h2>Strategies</h2><ul>",
        *(
            f"<li><code>{html.escape(n)}</code>: {html.escape(t.replace('`', ''))}</li>"
            for n, t in doc["strategies"].items()
        ),
        "</ul>",
    ]
    for symbol, res in doc["symbols"].items():
        o = res["overall"]
        span = f"{o['start_close']}..{o['last_day']} ({o['bars']} bars)"
        body.append(f"<h2>{html.escape(symbol)}, {span}</h2>")
        body.append(_html_rows(_overall(o)))
        for kind, caption in FIGURES.items():
            svg = figure(kind, result.series[symbol], symbol)
            body.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")
        if res["events"]:
            body.append("<p>Inside the archive events (total return / maximum drawdown):</p>")
            body.append(_html_rows(_events(res["events"])))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>regimed backtest</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def write_report(result: Backtest, out: str | Path) -> list[Path]:
    """Write backtest.md, backtest.html, the figures of every symbol and results.json into
    `out` (created if needed), each file through a temporary name. The written paths."""
    directory = Path(out)
    files = {
        "backtest.md": render_markdown(result.doc),
        "backtest.html": render_html(result),
        "results.json": json.dumps(result.doc, indent=2) + "\n",
    }
    for symbol, series in result.series.items():
        for kind in FIGURES:
            files[_file(symbol, kind)] = figure(kind, series, symbol)
    return write_files(directory, files)
