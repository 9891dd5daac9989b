"""The figures of the retrain report page (daemon.report.retrain_html): validation scores per
regime, fit times, vote weights, the training mix, confusion matrices and feature importances,
as inline SVG; and the value and drawing helpers they and the page share.

A null score (too few validation rows) is a grey "n/a" gap, never a 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from daemon.report.retrain_text import BASELINE_TITLES
from daemon.report.svg import GAP, INK, MUTED, SERIES, Svg, clip, mix, text_width
from daemon.report.svg import escape as _e
from daemon.training.report import (
    Confusion,
    ModelScores,
    RetrainReport,
    ScoreCell,
    ScoreTable,
    regime_order,
)

_TOP_FEATURES = 15


# -- values --------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(float(value), spec)


def _cell_html(value: float | None, spec: str = ".3f") -> str:
    text = _fmt(value, spec)
    return '<td class="na">n/a</td>' if text == "n/a" else f"<td>{text}</td>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)}: not in this report.</p>'


def _count(value: float | None) -> str:
    return f"{float(value or 0):,.0f}"


# -- drawing -------------------------------------------------------------------------------


def _score_colour(value: float) -> tuple[str, str]:
    """Fill and ink for a balanced accuracy: blue above a coin flip, orange below, full at 0.1
    away from 0.5."""
    t = max(-1.0, min(1.0, (value - 0.5) / 0.1))
    fill = mix("#2b6cb0" if t >= 0 else "#c05621", 0.9 * abs(t))
    return fill, "#ffffff" if abs(t) > 0.6 else INK


def _share_colour(t: float, colour: str = "#2f855a") -> tuple[str, str]:
    return mix(colour, 0.9 * t), "#ffffff" if t > 0.6 else INK


#: Confusion cells: right calls green, wrong calls red, both shaded by their share of the row.
_RIGHT, _WRONG = "#2f855a", "#c53030"


@dataclass(frozen=True)
class _Cell:
    fill: str
    ink: str
    text: str
    sub: str
    tip: str


def _gap(tip: str, sub: str = "") -> _Cell:
    return _Cell(GAP, MUTED, "n/a", sub, tip)


def _grid(
    svg: Svg,
    x0: float,
    y0: float,
    rows: Sequence[str],
    columns: Sequence[tuple[str, str]],
    cells: Sequence[Sequence[_Cell]],
    *,
    label_w: float | None = None,
    cell_h: float = 34.0,
    breaks: Iterable[int] = (),
) -> float:
    """A heatmap: row labels, column labels (with a second muted line), coloured cells with a
    value and a note. Rows listed in `breaks` start a new group after a gap. Returns its
    bottom."""
    label_w = label_w or max((text_width(clip(r)) for r in rows), default=0) + 16
    cell_w = min(max(max((text_width(c) for c, _ in columns), default=0) + 10, 66.0), 140.0)
    header = 32.0 if any(sub for _, sub in columns) else 18.0
    for j, (name, sub) in enumerate(columns):
        x = x0 + label_w + (j + 0.5) * cell_w
        svg.text(x, y0 + 12, clip(name), anchor="middle", size=11, tip=name)
        if sub:
            svg.text(x, y0 + 26, sub, anchor="middle", size=10, fill=MUTED)
    y = y0 + header
    gaps = set(breaks)
    for i, (row, row_cells) in enumerate(zip(rows, cells, strict=True)):
        y += 6 if i in gaps else 0
        svg.text(x0 + label_w - 8, y + cell_h / 2 + 4, clip(row), anchor="end", tip=row)
        for j, cell in enumerate(row_cells):
            x = x0 + label_w + j * cell_w
            svg.rect(x + 1, y + 1, cell_w - 2, cell_h - 2, cell.fill, cell.tip)
            mid = x + cell_w / 2
            centre = y + cell_h / 2
            svg.text(
                mid, centre + (-2 if cell.sub else 4), cell.text, anchor="middle", fill=cell.ink
            )
            if cell.sub:
                svg.text(mid, centre + 11, cell.sub, anchor="middle", size=9, fill=cell.ink)
        y += cell_h
    return y


def _bars(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    fmt: Callable[[float], str],
) -> str:
    """Horizontal bars, one group per category and one bar per series; None is "n/a"."""
    svg = Svg(title)
    label_w = max((text_width(clip(c)) for c in categories), default=0) + 16
    plot_w, bar_h, gap, top = 320.0, 14.0, 8.0, 6.0
    if len(series) > 1:
        x = label_w
        for i, (name, _) in enumerate(series):
            svg.rect(x, 4, 10, 10, SERIES[i % len(SERIES)])
            svg.text(x + 14, 13, name, size=11)
            x += 30 + text_width(name, 11)
        top = 24.0
    values = [v for _, vs in series for v in vs if v is not None and v > 0]
    peak = max(values, default=1.0)
    y = top
    for row, category in enumerate(categories):
        svg.text(label_w - 8, y + bar_h * len(series) / 2 + 4, clip(category), anchor="end")
        for i, (name, vs) in enumerate(series):
            value = vs[row]
            if value is None:
                svg.text(label_w + 4, y + bar_h - 3, "n/a", size=11, fill=MUTED)
            else:
                w = max(value, 0.0) / peak * plot_w
                tip = f"{category}, {name}: {fmt(value)}"
                svg.rect(label_w, y + 1, w, bar_h - 2, SERIES[i % len(SERIES)], tip)
                svg.text(label_w + w + 4, y + bar_h - 3, fmt(value), size=11)
            y += bar_h
        y += gap
    svg.line(label_w, top, label_w, y - gap)
    return svg.render()


def _baselines(report: RetrainReport) -> list[tuple[str, ModelScores]]:
    """The naive references of the validation, the usual three first."""
    baselines = report.validation.baselines if report.validation is not None else {}
    names = [n for n in BASELINE_TITLES if n in baselines]
    names += [n for n in baselines if n not in BASELINE_TITLES]
    return [(n, baselines[n]) for n in names]


def _scores_figure(report: RetrainReport) -> str:
    validation = report.validation
    if validation is None:
        return _missing("validation scores")
    # The ensemble first, then the base models, the naive references and the champion.
    ensemble = validation.ensemble
    rows: list[tuple[str, ScoreTable]] = [("ensemble", ensemble)]
    rows += [(n, m.table) for n, m in validation.models.items() if n != "ensemble"]
    breaks = [len(rows)]
    rows += [(f"{n} (naive)", b.table) for n, b in _baselines(report)]
    champion = report.champion
    if champion is not None:
        breaks.append(len(rows))
        rows.append(("champion", champion))
    regimes = regime_order(*(table.per_regime for _, table in rows))
    columns = [(r, f"n {_count(ensemble.regime(r).n)}") for r in regimes]
    columns.append(("overall", f"n {_count(ensemble.total.n)}"))
    cells = []
    for label, table in rows:
        row = [table.regime(r) for r in regimes] + [table.total]
        cells.append([_score_cell(label, col, c) for (col, _), c in zip(columns, row, strict=True)])
    svg = Svg("Balanced accuracy per regime (accuracy below)")
    _grid(svg, 0, 0, [r[0] for r in rows], columns, cells, breaks=breaks)
    return _figure(
        svg.render(),
        "Balanced accuracy on the validation rows, per regime and overall (accuracy below it): "
        "the ensemble, each base model and the naive references"
        + (", and the champion on the same rows" if champion else "")
        + ". Blue is better than a coin flip (0.5), orange worse; grey n/a means too few rows "
        "(or one label only) to score.",
    )


def _score_cell(row: str, column: str, cell: ScoreCell) -> _Cell:
    balanced, accuracy, n = cell.balanced_accuracy, cell.accuracy, cell.n
    tip = (
        f"{row} \u00b7 {column}: balanced accuracy {_fmt(balanced)}, accuracy {_fmt(accuracy)}"
        + ("" if n is None else f", n {n:,.0f}")
    )
    sub = f"acc {_fmt(accuracy)}"
    if balanced is None:
        return _gap(tip, sub)
    fill, ink = _score_colour(balanced)
    return _Cell(fill, ink, f"{balanced:.3f}", sub, tip)


def _fit_times_figure(report: RetrainReport) -> str:
    models = report.validation.models if report.validation is not None else {}
    names = [n for n in models if n != "ensemble"]
    if not names:
        return _missing("fit times")
    seconds = [models[n].fit_seconds for n in names]
    svg = _bars("Fit time per model (seconds)", names, [("seconds", seconds)], _seconds)
    return _figure(svg, "Wall-clock fit time of each base model, in seconds.")


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _vote_figure(report: RetrainReport) -> str:
    weights = report.ensemble.weights if report.ensemble is not None else {}
    if not weights:
        return _missing("ensemble vote weights")
    names = list(weights)
    svg = _bars("Vote weight per model", names, [("weight", list(weights.values()))], _percent)
    return _figure(
        svg,
        "Each model's weight in the ensemble's soft vote, from how far its balanced accuracy "
        "on the ensemble holdout exceeds 0.5; 0% means no say.",
    )


def _mix_figures(report: RetrainReport) -> str:
    mix = report.training
    if mix is None or not (mix.regime_counts_before or mix.regime_counts_after or mix.weight_share):
        return _missing("training mix")
    regimes = mix.regimes()
    counts = _bars(
        "Training rows per regime before and after sampling",
        regimes,
        [
            ("before", [mix.before(r) for r in regimes]),
            ("after", [mix.after(r) for r in regimes]),
        ],
        lambda v: f"{v:,.0f}",
    )
    rows_after = [mix.after(r) for r in regimes]
    total = sum(v for v in rows_after if v is not None)
    row_share = [None if v is None or total <= 0 else v / total for v in rows_after]
    weighted = _bars(
        "Share of rows and of weight per regime after sampling",
        regimes,
        [("rows", row_share), ("weight", [mix.share(r) for r in regimes])],
        _percent,
    )
    ratio = mix.effective_size_ratio
    notes = "" if ratio is None else f" Effective dataset size {ratio:.2f}x."
    if mix.absent_regimes:
        notes += f" No rows of: {', '.join(_e(r) for r in mix.absent_regimes)}."
    return _figure(
        counts,
        "Fitting rows per regime before and after balancing to the target mix (minorities "
        "oversampled, majorities undersampled).",
    ) + _figure(
        weighted,
        "Each regime's share of the sampled rows and of the total sample weight after the "
        f"regime weights: what the models are fitted to.{notes}",
    )


_ACTUAL = ("actual down", "actual up")
_PREDICTED = (("pred. down", ""), ("pred. up", ""))


def _confusion_figure(report: RetrainReport) -> str:
    matrices: dict[str, Confusion] = dict(report.confusion or {})
    if not matrices:
        return _missing("confusion matrices")
    svg = Svg("Confusion matrices on the validation rows")
    label_w, panel_w, panel_h, per_row = 96.0, 256.0, 118.0, 3
    for k, (name, matrix) in enumerate(matrices.items()):
        x0, y0 = (k % per_row) * panel_w, (k // per_row) * panel_h
        svg.text(x0 + label_w, y0 + 12, clip(name), bold=True, tip=name)
        cells = []
        for i, (actual, row) in enumerate(zip(_ACTUAL, matrix, strict=True)):
            total = sum(row)
            line = []
            for j, ((predicted, _), count) in enumerate(zip(_PREDICTED, row, strict=True)):
                tip = f"{name}: {actual}, {predicted}: {count:,}"
                if total == 0:
                    line.append(_gap(tip, "0 rows"))
                    continue
                fill, ink = _share_colour(count / total, _RIGHT if i == j else _WRONG)
                line.append(_Cell(fill, ink, f"{count:,}", f"{count / total:.0%} of row", tip))
            cells.append(line)
        _grid(svg, x0, y0 + 18, _ACTUAL, _PREDICTED, cells, label_w=label_w)
    return _figure(
        svg.render(),
        "Validation rows by actual and predicted direction for each model: right calls green, "
        "wrong calls red; the shade is the share of the actual row (the recall of down and of "
        "up on the diagonal).",
    )


def _importances(report: RetrainReport) -> str:
    by_model = {n: v for n, v in (report.importances or {}).items() if v}
    models = list(by_model)
    if not models:
        return _missing("feature importances (only the tree models have them)")
    features = list(dict.fromkeys(f for values in by_model.values() for f in values))
    means: dict[str, float] = {}
    for feature in features:
        found = [v for v in (report.importance(m, feature) for m in models) if v is not None]
        means[feature] = sum(found) / len(found) if found else -1.0
    ranked = sorted(features, key=lambda f: -means[f])
    top = ranked[:_TOP_FEATURES]
    shown = [report.importance(m, f) for m in models for f in top]
    peak = max((v for v in shown if v is not None and v > 0), default=1.0)
    cells = []
    for feature in top:
        line = []
        for model in models:
            value = report.importance(model, feature)
            tip = f"{feature} in {model}: {_fmt(value, '.2%')}"
            if value is None:
                line.append(_gap(tip))
                continue
            fill, ink = _share_colour(value / peak)
            line.append(_Cell(fill, ink, f"{value:.1%}", "", tip))
        cells.append(line)
    svg = Svg(f"Feature importances, top {len(top)} by mean")
    _grid(svg, 0, 0, top, [(m, "") for m in models], cells, cell_h=22.0)
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = "".join(
        f"<tr><td>{_e(f)}</td>"
        + "".join(_cell_html(report.importance(m, f), ".2%") for m in models)
        + "</tr>"
        for f in ranked
    )
    return _figure(
        svg.render(),
        f"The {len(top)} features with the highest mean importance over the tree models "
        f"(of {len(features)}); each model's importances sum to 100%.",
    ) + (
        f"<details><summary>All {len(features)} features</summary>"
        f"<table><tr><th>feature</th>{head}</tr>{rows}</table></details>"
    )
