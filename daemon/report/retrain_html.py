"""A retrain report as one self-contained HTML page; `regimed report` writes it.

The page opens with the promotion decision (rule, reason in words, the bootstrap intervals it
rests on), the overall figures with their 95% intervals (balanced accuracy, accuracy, AUC and
the Brier score of the candidate, the champion and the naive references), then balanced
accuracy per regime of the ensemble, every base model, the naive references and the champion
(accuracy beside it), the models' fit times and vote weights, the regime mix before and after
sampling with the weight shares, the window each stage saw (fit, vote weights, validation, the
refit that serves), confusion matrices and feature importances.

The figures (retrain_plots.py) are SVG written by regimed rather than drawn by matplotlib: they
are bars and heatmaps of a few dozen numbers, so the page stays small and byte-for-byte the
same for the same report, and the daemon gains no plotting stack (matplotlib brings half a
dozen packages and builds a font cache on first import). The page loads nothing from the
network and runs no script. Every string taken from the report is HTML-escaped, and a null
score (too few validation rows) is a grey "n/a" gap, never a 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon import __version__
from daemon.report.retrain_diagnostics import (
    calibration_figure,
    intervals_table,
    rolling_figure,
    timeline_figure,
)
from daemon.report.retrain_plots import (
    _baselines,
    _cell_html,
    _confusion_figure,
    _count,
    _fit_times_figure,
    _fmt,
    _importances,
    _missing,
    _mix_figures,
    _scores_figure,
    _vote_figure,
)
from daemon.report.retrain_text import SKILL_COLUMNS, skill_rows, window_rows
from daemon.report.svg import CSS
from daemon.report.svg import escape as _e
from daemon.training.report import EnsembleVote, Figure, Gate, RetrainReport

if TYPE_CHECKING:
    from daemon.registry.versions import ModelRecord

__all__ = ["render_html"]


def render_html(report: RetrainReport, *, model: ModelRecord | None = None) -> str:
    """The retrain `report` (as `retrain()` returns it, or the registry's stored report read
    with `RetrainReport.from_json`) as one HTML page with inline SVG figures. `model`, the
    registry row, adds what only the registry knows: the current status, when it was trained
    and the artifact's sha256."""
    version = model.version if model is not None else report.version
    title = f"regimed model {version}" if version else "regimed retrain report"
    body = [
        f"<h1>{_e(title)}</h1>",
        _meta(report, model),
        _decision(report),
        _headline(report),
        _skill_table(report),
        "<h2>Validation per regime</h2>",
        _scores_figure(report),
        intervals_table(report),
        "<h2>Over the validation period</h2>",
        timeline_figure(report),
        rolling_figure(report),
        "<h2>Calibration</h2>",
        calibration_figure(report),
        "<h2>Models</h2>",
        _models_table(report),
        _fit_times_figure(report),
        _vote_figure(report),
        "<h2>Training mix</h2>",
        _mix_figures(report),
        "<h2>Confusion matrices</h2>",
        _confusion_figure(report),
        "<h2>Feature importances</h2>",
        _importances(report),
        "<h2>Split</h2>",
        _split(report),
        f'<p class="meta">written by regimed {_e(__version__)}</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


# -- sections ------------------------------------------------------------------------------


def _meta(report: RetrainReport, model: ModelRecord | None) -> str:
    facts: list[str] = []
    if model is not None:
        facts.append(f"status <strong>{_e(model.status)}</strong>")
        facts.append(f"trained {_e(model.trained_at.isoformat(timespec='minutes'))}")
    if report.trigger is not None:
        facts.append(f"trigger {_e(report.trigger)}")
    window = report.data_window
    if window is not None:
        facts.append(f"data {_e(window.first)} to {_e(window.last)}")
    if report.samples:
        counts = ", ".join(f"{_e(k)} {_e(_count(v))}" for k, v in report.samples.items())
        facts.append(f"samples {counts}")
    if report.duration_seconds is not None:
        facts.append(f"took {_fmt(report.duration_seconds, '.1f')} s")
    if report.peak_rss_bytes is not None:
        facts.append(f"peak memory {_fmt(report.peak_rss_bytes / 2**20, '.0f')} MiB")
    if report.feature_version is not None:
        facts.append(f"feature layout {_e(report.feature_version)}")
    if model is not None:
        facts.append(f"sha256 <code>{_e(model.sha256[:12])}</code>")
    return f'<p class="meta">{" &middot; ".join(facts)}</p>' if facts else ""

def _decision(report: RetrainReport) -> str:
    promoted = report.promoted
    gate = report.gate or Gate()
    if promoted is True:
        verdict, css = "PROMOTED", "promoted"
    elif promoted is False:
        verdict, css = "NOT PROMOTED", "rejected"
    else:
        verdict, css = "NO DECISION RECORDED", "unknown"
    head = verdict + (f" ({_e(gate.rule)})" if gate.rule else "")
    lines = [f'<section class="decision {css}"><h2>{head}</h2>']
    lines.append(f"<p>{_e(report.reason or 'no reason recorded')}</p>")
    metric = (gate.metric or "balanced_accuracy").replace("_", " ")
    if gate.edge is not None:
        lines.append(
            f"<p>Skill, {_e(metric)} of the candidate minus the best naive reference: "
            f"{_e(gate.edge.words())} (95% bootstrap interval; its lower bound decides).</p>"
        )
    if gate.interval is not None:
        low, high = gate.interval
        lines.append(
            f"<p>Candidate minus champion, {_e(metric)}: 95% paired bootstrap interval "
            f"[{low:+.3f}, {high:+.3f}] (its lower bound decides).</p>"
        )
        if gate.regimes:
            items = "".join(
                f"<li>{_e(r)} ({_e(_count(c.n))} rows): {_e(c.words())}</li>"
                for r, c in gate.regimes.items()
            )
            lines.append(f"<p>Regimes compared with the champion:</p><ul>{items}</ul>")
    elif report.champion is None:
        lines.append("<p>No interval: there was no champion to compare with.</p>")
    else:
        lines.append("<p>No interval was computed.</p>")
    if report.champion_error:
        lines.append(f"<p>Champion left out: {_e(report.champion_error)}</p>")
    failed = report.failed_models
    if failed:
        items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in failed.items())
        lines.append(f"<p>Optional models that failed to fit:</p><ul>{items}</ul>")
    return "".join(lines) + "</section>"


def _headline(report: RetrainReport) -> str:
    overall = report.validation.overall if report.validation is not None else None
    if overall is None:
        return ""
    parts = [
        f"Ensemble balanced accuracy <strong>{_fmt(overall.balanced_accuracy)}</strong>"
        f" (accuracy {_fmt(overall.accuracy)}, {_e(_count(overall.n))} "
        "validation rows)"
    ]
    refs = {k: b.balanced_accuracy for k, b in _baselines(report)}
    known = {k: v for k, v in refs.items() if v is not None}
    if known:
        best = max(known, key=lambda k: known[k])
        parts.append(f"best naive reference {_e(best)} {known[best]:.3f}")
    champion = report.champion.overall if report.champion is not None else None
    if champion is not None:
        parts.append(f"champion {_fmt(champion.balanced_accuracy)}")
    return f'<p class="headline">{"; ".join(parts)}.</p>'


def _skill_table(report: RetrainReport) -> str:
    rows = skill_rows(report)
    if not rows:
        return ""
    head = "<tr><th>overall</th>" + "".join(f"<th>{_e(t)}</th>" for _, t in SKILL_COLUMNS)
    body = []
    for title, figures in rows:
        cells = "".join(_figure_html(figures.get(m, Figure())) for m, _ in SKILL_COLUMNS)
        body.append(f"<tr><td>{_e(title)}</td>{cells}</tr>")
    return (
        f"<table>{head}</tr>{''.join(body)}</table>"
        '<p class="meta">95% moving-block bootstrap intervals over trading days. AUC 0.5 is '
        "no ranking skill; the Brier score is the mean squared error of the probability of "
        "up (lower is better; the constant references forecast the training rate of up-days)."
        "</p>"
    )


def _figure_html(figure: Figure) -> str:
    if figure.value is None:
        return _cell_html(None)
    if figure.interval is None:
        return f"<td>{figure.value:.3f}</td>"
    low, high = figure.interval
    return f"<td>{figure.value:.3f} <small>[{low:.3f}, {high:.3f}]</small></td>"


def _models_table(report: RetrainReport) -> str:
    validation = report.validation
    if validation is None or not validation.models:
        return _missing("model scores")
    vote = report.ensemble or EnsembleVote()
    head = (
        "<tr><th>model</th><th>balanced accuracy</th><th>accuracy</th><th>fit s</th>"
        "<th>vote weight</th><th>holdout bal. acc.</th><th>refit s</th></tr>"
    )
    refit = report.windows.refit_fit_seconds if report.windows is not None else {}
    blank = "<td>&ndash;</td>"
    overall = validation.ensemble.total
    rows = [
        f"<tr><th>ensemble</th>{_cell_html(overall.balanced_accuracy)}"
        f"{_cell_html(overall.accuracy)}{blank * 4}</tr>"
    ]
    for name, cell in ((n, c) for n, c in validation.models.items() if n != "ensemble"):
        rows.append(
            f"<tr><td>{_e(name)}</td>{_cell_html(cell.balanced_accuracy)}"
            f"{_cell_html(cell.accuracy)}{_cell_html(cell.fit_seconds, '.1f')}"
            f"{_cell_html(vote.weight(name), '.1%')}{_cell_html(vote.holdout(name))}"
            f"{_cell_html(refit.get(name), '.1f')}</tr>"
        )
    for name, ref in _baselines(report):
        rows.append(
            f"<tr><td>{_e(name)} (naive)</td>{_cell_html(ref.balanced_accuracy)}"
            f"{_cell_html(ref.accuracy)}{blank * 4}</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _split(report: RetrainReport) -> str:
    split = report.split
    if split is None:
        return _missing("split") + _windows(report)
    events = ", ".join(_e(e) for e in split.held_out_events) or "none"
    return (
        f"<p>Validation from {_e(split.cutoff)} "
        f"({_e(_count(split.validation_rows))} rows); training up to "
        f"{_e(split.train_end)} ({_e(_count(split.train_rows))} rows: "
        f"{_e(_count(split.fit_rows))} to fit, "
        f"{_e(_count(split.ensemble_holdout_rows))} to weigh the vote; "
        f"{_e(_count(split.purged_rows))} purged). Archive events held out for "
        f"validation: {events}.</p>{_windows(report)}"
    )


def _windows(report: RetrainReport) -> str:
    """The days and rows each stage saw; why there was no refit, when there was none."""
    windows = report.windows
    if windows is None:
        return ""
    rows = "".join(
        f"<tr><td>{_e(title)}</td>{_day(w.first if w else None)}{_day(w.last if w else None)}"
        f"{_cell_html(w.rows if w else None, ',.0f')}</tr>"
        for title, w in window_rows(windows)
    )
    note = f"<p>{_e(windows.refit_note)}</p>" if windows.refit_note else ""
    return (
        "<table><tr><th>stage</th><th>first day</th><th>last day</th><th>rows</th></tr>"
        f"{rows}</table>{note}"
    )


def _day(value: str | None) -> str:
    return '<td class="na">n/a</td>' if value is None else f'<td class="day">{_e(value)}</td>'
