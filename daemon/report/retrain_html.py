"""A retrain report as one self-contained HTML page; `regimed report` writes it.

The page opens with the promotion decision (rule, reason, bootstrap interval), then balanced
accuracy per regime of the ensemble, every base model, the naive references and the champion
(accuracy beside it), the models' fit times and vote weights, the regime mix before and after
sampling with the weight shares, confusion matrices and feature importances.

The figures (retrain_plots.py) are SVG written by regimed rather than drawn by matplotlib: they
are bars and heatmaps of a few dozen numbers, so the page stays small and byte-for-byte the
same for the same report, and the daemon gains no plotting stack (matplotlib brings half a
dozen packages and builds a font cache on first import). The page loads nothing from the
network and runs no script. Every string taken from the report is HTML-escaped, and a null
score (too few validation rows) is a grey "n/a" gap, never a 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.report.retrain_plots import (
    _baselines,
    _cell_html,
    _confusion_figure,
    _count,
    _fit_times_figure,
    _fmt,
    _importances,
    _map,
    _missing,
    _mix_figures,
    _num,
    _scores_figure,
    _vote_figure,
)
from daemon.report.svg import CSS
from daemon.report.svg import escape as _e

if TYPE_CHECKING:
    from daemon.registry.versions import ModelRecord

__all__ = ["render_html"]


def render_html(report: Mapping[str, Any], *, model: ModelRecord | None = None) -> str:
    """The retrain `report` (as `retrain()` returns it or the registry stores it) as one HTML
    page with inline SVG figures. `model`, the registry row, adds what only the registry
    knows: the current status, when it was trained and the artifact's sha256."""
    version = model.version if model is not None else report.get("version")
    title = f"regimed model {version}" if version else "regimed retrain report"
    body = [
        f"<h1>{_e(title)}</h1>",
        _meta(report, model),
        _decision(report),
        _headline(report),
        "<h2>Validation per regime</h2>",
        _scores_figure(report),
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


def _meta(report: Mapping[str, Any], model: ModelRecord | None) -> str:
    facts: list[str] = []
    if model is not None:
        facts.append(f"status <strong>{_e(model.status)}</strong>")
        facts.append(f"trained {_e(model.trained_at.isoformat(timespec='minutes'))}")
    if report.get("trigger") is not None:
        facts.append(f"trigger {_e(report['trigger'])}")
    window = _map(report.get("data_window"))
    if window:
        facts.append(f"data {_e(window.get('first'))} to {_e(window.get('last'))}")
    samples = _map(report.get("samples"))
    if samples:
        counts = ", ".join(f"{_e(k)} {_e(_count(v))}" for k, v in samples.items())
        facts.append(f"samples {counts}")
    if _num(report.get("duration_seconds")) is not None:
        facts.append(f"took {_fmt(report['duration_seconds'], '.1f')} s")
    if report.get("feature_version") is not None:
        facts.append(f"feature layout {_e(report['feature_version'])}")
    if model is not None:
        facts.append(f"sha256 <code>{_e(model.sha256[:12])}</code>")
    return f'<p class="meta">{" &middot; ".join(facts)}</p>' if facts else ""

def _decision(report: Mapping[str, Any]) -> str:
    promoted = report.get("promoted")
    gate = _map(report.get("gate"))
    if promoted is True:
        verdict, css = "PROMOTED", "promoted"
    elif promoted is False:
        verdict, css = "NOT PROMOTED", "rejected"
    else:
        verdict, css = "NO DECISION RECORDED", "unknown"
    rule = gate.get("rule")
    head = verdict + (f" ({_e(rule)})" if rule else "")
    lines = [f'<section class="decision {css}"><h2>{head}</h2>']
    lines.append(f"<p>{_e(report.get('reason') or 'no reason recorded')}</p>")
    metric = str(gate.get("metric") or "balanced_accuracy").replace("_", " ")
    interval = gate.get("interval")
    bounds = [_num(v) for v in interval] if isinstance(interval, list | tuple) else []
    if len(bounds) == 2 and bounds[0] is not None and bounds[1] is not None:
        lines.append(
            f"<p>Candidate minus champion, {_e(metric)}: 95% bootstrap interval "
            f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}] (it informs; the rules decide).</p>"
        )
    elif report.get("champion") is None:
        lines.append("<p>No interval: there was no champion to compare with.</p>")
    else:
        lines.append("<p>No interval was computed.</p>")
    if report.get("champion_error"):
        lines.append(f"<p>Champion left out: {_e(report['champion_error'])}</p>")
    failed = _map(report.get("failed_models"))
    if failed:
        items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in failed.items())
        lines.append(f"<p>Optional models that failed to fit:</p><ul>{items}</ul>")
    return "".join(lines) + "</section>"


def _headline(report: Mapping[str, Any]) -> str:
    validation = _map(report.get("validation"))
    overall = _map(validation.get("overall"))
    if not overall:
        return ""
    parts = [
        f"Ensemble balanced accuracy <strong>{_fmt(overall.get('balanced_accuracy'))}</strong>"
        f" (accuracy {_fmt(overall.get('accuracy'))}, {_e(_count(overall.get('n')))} "
        "validation rows)"
    ]
    refs = {
        k: v
        for k, v in ((k, _num(_map(b).get("balanced_accuracy"))) for k, b in _baselines(report))
        if v is not None
    }
    if refs:
        best = max(refs, key=lambda k: refs[k])
        parts.append(f"best naive reference {_e(best)} {refs[best]:.3f}")
    champion = _map(_map(report.get("champion")).get("overall"))
    if champion:
        parts.append(f"champion {_fmt(champion.get('balanced_accuracy'))}")
    return f'<p class="headline">{"; ".join(parts)}.</p>'


def _models_table(report: Mapping[str, Any]) -> str:
    validation = _map(report.get("validation"))
    models = _map(validation.get("models"))
    if not models:
        return _missing("model scores")
    ensemble = _map(report.get("ensemble"))
    weights, holdout = (
        _map(ensemble.get("weights")),
        _map(ensemble.get("holdout_balanced_accuracy")),
    )
    head = (
        "<tr><th>model</th><th>balanced accuracy</th><th>accuracy</th><th>fit s</th>"
        "<th>vote weight</th><th>holdout bal. acc.</th></tr>"
    )
    blank = "<td>&ndash;</td>"
    overall = _map(validation.get("overall"))
    rows = [
        f"<tr><th>ensemble</th>{_cell_html(overall.get('balanced_accuracy'))}"
        f"{_cell_html(overall.get('accuracy'))}{blank * 3}</tr>"
    ]
    for name, cell in ((n, _map(c)) for n, c in models.items() if n != "ensemble"):
        rows.append(
            f"<tr><td>{_e(name)}</td>{_cell_html(cell.get('balanced_accuracy'))}"
            f"{_cell_html(cell.get('accuracy'))}{_cell_html(cell.get('fit_seconds'), '.1f')}"
            f"{_cell_html(weights.get(name), '.1%')}{_cell_html(holdout.get(name))}</tr>"
        )
    for name, ref in _baselines(report):
        rows.append(
            f"<tr><td>{_e(name)} (naive)</td>{_cell_html(ref.get('balanced_accuracy'))}"
            f"{_cell_html(ref.get('accuracy'))}{blank * 3}</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _split(report: Mapping[str, Any]) -> str:
    split = _map(report.get("split"))
    if not split:
        return _missing("split")
    held = split.get("held_out_events")
    events = ", ".join(_e(e) for e in held) if isinstance(held, list) and held else "none"
    return (
        f"<p>Validation from {_e(split.get('cutoff'))} "
        f"({_e(_count(split.get('validation_rows')))} rows); training up to "
        f"{_e(split.get('train_end'))} ({_e(_count(split.get('train_rows')))} rows: "
        f"{_e(_count(split.get('fit_rows')))} to fit, "
        f"{_e(_count(split.get('ensemble_holdout_rows')))} to weigh the vote; "
        f"{_e(_count(split.get('purged_rows')))} purged). Archive events held out for "
        f"validation: {events}.</p>"
    )
