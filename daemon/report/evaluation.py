"""The evaluation's report: a table for the terminal, `evaluation.md` and `evaluation.html`
with two inline-SVG plots (also written as .svg files the markdown links to).

Plots, drawn with the report module's SVG helper (no plotting library, like `regimed report`):
balanced accuracy per regime and variant with its 95% interval, and cumulative balanced accuracy
over the test period with the market's stress regimes shaded.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from daemon import __version__
from daemon.domain import REGIMES
from daemon.evaluation.results import Difference, EvaluationDocument, GroupResult, Timeline
from daemon.evaluation.run import Evaluation
from daemon.report.files import write_files
from daemon.report.svg import CSS, REGIME_SHADE, SERIES, Svg, date_ticks, ticks
from daemon.training.scoring import reference_title

__all__ = ["render_html", "render_markdown", "render_text", "write_report"]

_GROUPS: tuple[str, ...] = ("overall", *REGIMES)
_SHADE = REGIME_SHADE
_COLOURS = (*SERIES, "#e45756", "#72b7b2", "#9d755d", "#bab0ac")


def _names(doc: EvaluationDocument) -> list[str]:
    return [*doc["variant_names"], *doc["naive_names"]]


def _title(doc: EvaluationDocument, name: str) -> str:
    """A variant's name, or (for a target other than direction, where `always_up` would
    mislead) a naive reference's name in words for the evaluated target."""
    target = doc["settings"].get("target") or "direction"
    if name not in doc["naive_names"] or target.startswith("direction"):
        return name
    return reference_title(name, target)


def _group(doc: EvaluationDocument, name: str, group: str) -> GroupResult:
    v = doc["variants"][name]
    return v["overall"] if group == "overall" else v["per_regime"][group]


def _f(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _ci(value: Sequence[float] | None) -> str:
    return "" if not value else f"[{value[0]:.3f}, {value[1]:.3f}]"


def _settings_line(doc: EvaluationDocument) -> str:
    s, d = doc["settings"], doc["data"]
    return (
        f"{d['source']} ({', '.join(d['symbols'])}, labelled bars "
        f"{d['first_day']}..{d['last_day']}); "
        f"{len(doc['folds'])} {s['step']}ly folds from {s['start']}; models "
        f"{', '.join(s['models'])}; target {s.get('target', 'direction')}; 95% intervals from "
        f"{s['bootstrap_samples']} moving-block bootstrap resamples of {s['block_days']} "
        "trading days"
        + ("; members refit on every row before each test" if s.get("refit") else "")
    )


def render_text(doc: EvaluationDocument) -> str:
    """Balanced accuracy per regime and overall of every variant, then accuracy, the
    differences to the baseline and the control: the table `regimed evaluate` prints."""
    lines = [f"walk-forward evaluation: {_settings_line(doc)}", ""]
    head = ["balanced accuracy", *(g for g in _GROUPS)]
    rows = [head]
    for name in _names(doc):
        rows.append(
            [_title(doc, name), *(_f(_group(doc, name, g)["balanced_accuracy"]) for g in _GROUPS)]
        )
    rows.append(["n (test bars)", *(str(_group(doc, "baseline", g)["n"]) for g in _GROUPS)])
    lines += _table(rows)
    lines.append("")
    rows = [["accuracy", *_GROUPS]]
    for name in _names(doc):
        rows.append([_title(doc, name), *(_f(_group(doc, name, g)["accuracy"]) for g in _GROUPS)])
    lines += _table(rows)
    lines.append("")
    lines.append("95% interval of overall and crash balanced accuracy:")
    for name in _names(doc):
        o, c = _group(doc, name, "overall"), _group(doc, name, "crash")
        lines.append(
            f"  {_title(doc, name):<18} overall {_ci(o['ci95']) or 'n/a':<17} "
            f"crash {_ci(c['ci95']) or 'n/a'}"
        )
    lines.append("")
    rows = [["minus baseline (BA)", *_GROUPS]]
    for name, diff in doc["differences"].items():
        rows.append([name, *(_delta(diff[g]) for g in _GROUPS)])
    lines += _table(rows)
    c = doc["controls"]["shuffled_labels"]
    lines.append("")
    lines.append(
        f"control, `all` trained on shuffled labels ({c['folds']} folds, {c['n']} bars): "
        f"balanced accuracy {_f(c['balanced_accuracy'])} {_ci(c['ci95'])}"
    )
    return "\n".join(lines) + "\n"


def _delta(cell: Difference) -> str:
    if cell["delta"] is None:
        return "n/a"
    ci = cell["ci95"]
    return f"{cell['delta']:+.3f}" + ("" if not ci else f" [{ci[0]:+.3f},{ci[1]:+.3f}]")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def _md_table(rows: Sequence[Sequence[str]]) -> list[str]:
    out = [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def render_markdown(doc: EvaluationDocument, figures: Mapping[str, str] | None = None) -> str:
    """`evaluation.md`: the settings, the tables (balanced accuracy with its interval first),
    the differences to the baseline, the control, the folds; `figures` names the SVG files to
    link (file name -> caption)."""
    lines = [
        "# Walk-forward evaluation of regime-aware training",
        "",
        _settings_line(doc) + ".",
        "",
    ]
    lines += ["## Balanced accuracy (95% interval), per regime and overall", ""]
    rows = [["variant", *_GROUPS]]
    for name in _names(doc):
        cells = []
        for g in _GROUPS:
            cell = _group(doc, name, g)
            cells.append(f"{_f(cell['balanced_accuracy'])} {_ci(cell['ci95'])}".strip())
        rows.append([f"`{name}`" if name == _title(doc, name) else _title(doc, name), *cells])
    rows.append(["n (test bars)", *(str(_group(doc, "baseline", g)["n"]) for g in _GROUPS)])
    lines += _md_table(rows)
    lines += ["", "## Accuracy", ""]
    rows = [["variant", *_GROUPS]]
    for name in _names(doc):
        title = f"`{name}`" if name == _title(doc, name) else _title(doc, name)
        rows.append([title, *(_f(_group(doc, name, g)["accuracy"]) for g in _GROUPS)])
    lines += _md_table(rows)
    lines += ["", "## Balanced accuracy minus the baseline's (95% interval of the difference)", ""]
    rows = [["variant", *_GROUPS]]
    for name, diff in doc["differences"].items():
        rows.append([f"`{name}`", *(_delta(diff[g]) for g in _GROUPS)])
    lines += _md_table(rows)
    c = doc["controls"]["shuffled_labels"]
    lines += [
        "",
        "## Control",
        "",
        f"The `all` variant trained on training labels shuffled within each fold ({c['folds']} "
        f"folds, {c['n']} test bars): balanced accuracy {_f(c['balanced_accuracy'])} "
        f"{_ci(c['ci95'])}, accuracy {_f(c['accuracy'])}.",
        "",
    ]
    for name, caption in (figures or {}).items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines += ["## Folds", ""]
    rows = [["cutoff", "end", "train rows", "archive rows", "test rows", "archive events"]]
    for f in doc["folds"]:
        rows.append(
            [
                f["cutoff"],
                f["end"],
                str(f["train_rows"]),
                str(f["archive_rows"]),
                str(f["test_rows"]),
                ", ".join(f["archive_events"]) or "-",
            ]
        )
    lines += _md_table(rows)
    lines += ["", f"Took {doc['duration_seconds']:.0f} s (regimed {__version__}).", ""]
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------


class _Plot(Svg):
    """`Svg` with coloured strokes and polylines."""

    def stroke(
        self, x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1.5
    ) -> None:
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{width:g}"/>'
        )
        self._grow(max(x1, x2), max(y1, y2))

    def polyline(self, points: Sequence[tuple[float, float]], colour: str) -> None:
        text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(
            f'<polyline points="{text}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        if points:
            self._grow(max(x for x, _ in points), max(y for _, y in points))


def scores_plot(doc: EvaluationDocument) -> str:
    """Balanced accuracy with its 95% interval: one panel row per regime, one dot and whisker
    per variant; the dashed line is a coin flip (0.5)."""
    names = _names(doc)
    svg = _Plot("Balanced accuracy per regime and variant, 95% interval")
    label_w, plot_w, row_h, lo, hi = 130.0, 420.0, 11.0, 0.3, 0.7
    x, ly = label_w, 4.0
    for i, name in enumerate(names):
        if x + 30 + 7 * len(name) > label_w + plot_w:
            x, ly = label_w, ly + 16
        svg.rect(x, ly, 10, 10, _COLOURS[i % len(_COLOURS)])
        svg.text(x + 14, ly + 9, name, size=11)
        x += 30 + 7 * len(name)
    top = ly + 22

    def px(v: float) -> float:
        return label_w + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w

    y = top + 14
    for tick in (0.3, 0.4, 0.5, 0.6, 0.7):
        svg.text(px(tick), top + 8, f"{tick:.1f}", anchor="middle", size=10)
    for g in _GROUPS:
        n = _group(doc, "baseline", g)["n"]
        svg.text(label_w - 8, y + row_h * len(names) / 2 + 4, g, anchor="end", bold=g == "overall")
        svg.text(label_w - 8, y + row_h * len(names) / 2 + 16, f"n={n}", anchor="end", size=10)
        svg.rect(label_w, y, plot_w, row_h * len(names), "#f7fafc")
        for i, name in enumerate(names):
            cell = _group(doc, name, g)
            colour = _COLOURS[i % len(_COLOURS)]
            cy = y + (i + 0.5) * row_h
            value, ci = cell["balanced_accuracy"], cell["ci95"]
            if value is None:
                svg.text(label_w + 4, cy + 4, f"{name}: n/a", size=9, fill="#718096")
                continue
            if ci:
                svg.stroke(px(ci[0]), cy, px(ci[1]), cy, colour)
            svg.rect(px(value) - 3, cy - 3, 6, 6, colour, f"{g}, {name}: {value:.3f} {_ci(ci)}")
        y += row_h * len(names) + 10
    svg.stroke(px(0.5), top + 12, px(0.5), y - 10, "#a0aec0", 1)
    return svg.render()


def cumulative_plot(timeline: Timeline) -> str:
    """Cumulative balanced accuracy of the baseline, the `all` variant and "always up" over the
    test days, on round ticks with a coin flip (0.5) dashed; crash (red), high-volatility
    (orange) and recovery (green) days of the first symbol shaded."""
    days: list[str] = list(timeline["days"])
    series: Mapping[str, list[float | None]] = timeline["cumulative_balanced_accuracy"]
    svg = _Plot("Cumulative balanced accuracy over the test period")
    left, top, w, h = 50.0, 30.0, 640.0, 220.0
    # the first weeks swing widely on few rows; the axis is fitted to the rest
    values = [v for s in series.values() for v in s[min(20, len(s) - 1) :] if v is not None]
    axis = ticks(min([*values, 0.48]), max([*values, 0.52]))
    lo, hi = axis[0], axis[-1]
    n = max(len(days) - 1, 1)

    def px(i: int) -> float:
        return left + i / n * w

    def py(v: float) -> float:
        return top + h - (min(max(v, lo), hi) - lo) / (hi - lo) * h

    svg.bands(list(timeline["regimes"]), px, top, h)
    for tick in axis:
        svg.stroke(left, py(tick), left + w, py(tick), "#edf2f7", 1)
        svg.text(left - 6, py(tick) + 4, f"{tick:g}", anchor="end", size=10)
    svg.parts.append(
        f'<line x1="{left:.1f}" y1="{py(0.5):.1f}" x2="{left + w:.1f}" y2="{py(0.5):.1f}" '
        'stroke="#a0aec0" stroke-dasharray="4 3"/>'
    )
    for i, label in date_ticks(days):
        svg.text(px(i), top + h + 14, label, anchor="middle", size=10)
    svg.stroke(left, top + h, left + w, top + h, "#a0aec0", 1)
    x = left
    for k, (name, points) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        svg.polyline([(px(t), py(v)) for t, v in enumerate(points) if v is not None], colour)
        svg.rect(x, 6, 10, 10, colour)
        svg.text(x + 14, 15, name, size=11)
        x += 30 + 7 * len(name)
    for regime, colour in _SHADE.items():
        svg.rect(x, 6, 10, 10, colour)
        svg.text(x + 14, 15, regime, size=11)
        x += 30 + 7 * len(regime)
    return svg.render()


FIGURES = {
    "balanced_accuracy.svg": "Balanced accuracy per regime and variant with 95% block-bootstrap "
    "intervals; the vertical line is a coin flip (0.5).",
    "cumulative_balanced_accuracy.svg": "Cumulative balanced accuracy over the test period "
    "(baseline, all, always up; the dashed line is a coin flip, 0.5, where always up stays); "
    "crash days shaded red, high-volatility orange, recovery green (first symbol).",
}


def render_html(evaluation: Evaluation) -> str:
    """`evaluation.html`: the markdown report's tables and both plots in one offline page."""
    doc = evaluation.doc
    md = render_markdown(doc)
    body: list[str] = []
    table: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            body.append(_html_table(table))
            table = []
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    if table:
        body.append(_html_table(table))
    figures = [
        f"<figure>{scores_plot(doc)}<figcaption>{html.escape(FIGURES['balanced_accuracy.svg'])}"
        "</figcaption></figure>",
        f"<figure>{cumulative_plot(evaluation.timeline)}<figcaption>"
        f"{html.escape(FIGURES['cumulative_balanced_accuracy.svg'])}</figcaption></figure>",
    ]
    at = next(k for k, part in enumerate(body) if part.startswith("<h2>Control")) + 2
    body[at:at] = figures
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>regimed walk-forward evaluation</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def _html_table(lines: Sequence[str]) -> str:
    rows = [
        [c.strip().strip("`") for c in line.strip("|").split("|")]
        for line in lines
        if "---" not in line
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(evaluation: Evaluation, out: str | Path) -> list[Path]:
    """Write evaluation.md, evaluation.html, the two SVG plots and results.json into `out`
    (created if needed); each file through a temporary name. The written paths."""
    import json

    directory = Path(out)
    files = {
        "evaluation.md": render_markdown(evaluation.doc, FIGURES),
        "evaluation.html": render_html(evaluation),
        "balanced_accuracy.svg": scores_plot(evaluation.doc),
        "cumulative_balanced_accuracy.svg": cumulative_plot(evaluation.timeline),
        "results.json": json.dumps(evaluation.doc, indent=2) + "\n",
    }
    return write_files(directory, files)
