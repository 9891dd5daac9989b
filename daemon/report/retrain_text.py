"""The retrain report as text: the per-regime validation table (balanced accuracy first, beside
the naive references and the champion), the overall figures with their 95% intervals (balanced
accuracy, accuracy, AUC, Brier score), the models, the training mix, the window each stage saw
(fit, vote weights, validation, refit) and the gate's decision in words. `regimed retrain` and
`regimed demo` print it."""

from __future__ import annotations

from collections.abc import Mapping

from daemon.domain import REGIMES
from daemon.training.report import (
    Diagnostics,
    Figure,
    Gate,
    RetrainReport,
    ScoreCell,
    Validation,
    Window,
    Windows,
)

BASELINE_TITLES = {
    "always_up": "always up",
    "training_majority": "majority",
    "previous_return": "prev. return",
}


def baseline_titles(target: str | None) -> dict[str, str]:
    """The short titles of the naive references under the report's target: for a target other
    than direction `always up` predicts 1 (`always 1`) and the previous return's reference
    says 1 after a fall (`prev. fall`)."""
    titles = dict(BASELINE_TITLES)
    if target is not None and not target.startswith("direction"):
        titles["always_up"] = "always 1"
        titles["previous_return"] = "prev. fall"
    return titles


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(report: RetrainReport) -> str:
    """A readable summary of a retrain report."""
    lines: list[str] = []
    version = report.version or (
        "(unchanged: no version added)" if report.outcome == "unchanged" else "(none)"
    )
    lines.append(
        f"retrain {version}  trigger {report.trigger or '-'}  {report.duration_seconds or 0:.1f} s"
    )
    if report.peak_rss_bytes is not None:
        lines[-1] += f"  peak memory {report.peak_rss_bytes / 2**20:.0f} MiB"
    if report.target is not None:
        lines.append(f"target {report.target}")
    validation = report.validation
    if validation is not None:
        lines.append("")
        lines.append(_regime_table(report, validation))
        lines.append("")
        if report.diagnostics is not None:
            lines.append(_diagnostics_text(report.diagnostics))
            lines.append("")
        if report.skill:
            lines.append(skill_table(report))
            lines.append("")
        refit = report.windows.refit_fit_seconds if report.windows is not None else {}
        lines.append(_model_table(validation, refit))
    mix = report.training
    if mix is not None:
        lines.append("")
        lines.append("training mix (fit part)    before     after   weight share")
        for regime in REGIMES:
            lines.append(
                f"  {regime:<22} {mix.before(regime) or 0:>8,} {mix.after(regime) or 0:>9,}"
                f"   {_pct(mix.share(regime)):>12}"
            )
        lines.append(f"  effective size {mix.effective_size_ratio or 0:.2f}x")
    split = report.split
    if split is not None:
        held = ", ".join(split.held_out_events) or "none"
        lines.append(
            f"split: validation from {split.cutoff} ({split.validation_rows or 0:,} rows), "
            f"training to {split.train_end} ({split.train_rows or 0:,} rows, "
            f"{split.purged_rows or 0:,} purged); archive events held out: {held}"
        )
    if report.windows is not None:
        lines.append(_windows_table(report.windows))
    gate = report.gate or Gate()
    lines.append("")
    verdict = "PROMOTED" if report.promoted else "NOT PROMOTED"
    reason = report.reason or "no reason recorded"
    lines.append(f"decision: {verdict} ({gate.rule or 'failed'}): {reason}")
    metric = (gate.metric or "balanced_accuracy").replace("_", " ")
    if gate.edge is not None:
        lines.append(f"  skill, {metric}: {gate.edge.words()}")
    if gate.interval is not None:
        low, high = gate.interval
        lines.append(f"  candidate - champion, {metric}: 95% interval [{low:+.3f}, {high:+.3f}]")
    for regime, found in gate.regimes.items():
        lines.append(f"  {regime} ({found.n or 0:,} rows), {metric}: {found.words()}")
    return "\n".join(lines) + "\n"


#: The overall figures, in the order the skill tables list them; Brier: lower is better.
SKILL_COLUMNS = (
    ("balanced_accuracy", "bal.acc"),
    ("accuracy", "acc"),
    ("auc", "AUC"),
    ("brier", "Brier"),
)


def skill_rows(report: RetrainReport) -> list[tuple[str, dict[str, Figure]]]:
    """(title, figures by metric) for the candidate, the champion and each naive reference."""
    skill = report.skill or {}
    order = ["candidate", "champion", *BASELINE_TITLES, *skill]
    titles = {"candidate": "candidate", "champion": "champion", **baseline_titles(report.target)}
    present = [who for who in dict.fromkeys(order) if who in skill]
    return [(titles.get(who, who), dict(skill[who])) for who in present]


def _interval_text(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    if figure.interval is None:
        return f"{figure.value:.3f}"
    low, high = figure.interval
    return f"{figure.value:.3f} [{low:.3f}, {high:.3f}]"


def skill_table(report: RetrainReport) -> str:
    """The overall figures with 95% bootstrap intervals, one row per predictor."""
    head = f"{'':<14}" + "".join(f" {title:>21}" for _, title in SKILL_COLUMNS)
    lines = [
        "overall, with 95% intervals (AUC 0.5: no ranking skill; Brier: lower is better)",
        head,
    ]
    for title, figures in skill_rows(report):
        line = f"{title:<14}"
        for metric, _ in SKILL_COLUMNS:
            line += f" {_interval_text(figures.get(metric, Figure())):>21}"
        lines.append(line)
    return "\n".join(lines)


def _regime_table(report: RetrainReport, validation: Validation) -> str:
    champion = report.champion
    baselines = validation.baselines
    names = [n for n in BASELINE_TITLES if n in baselines]
    head = f"{'regime':<16} {'n':>6}  {'bal.acc':>8} {'acc':>7}"
    titles = baseline_titles(report.target)
    for name in names:
        head += f" {titles[name]:>12}"
    head += f" {'champion':>9}"
    lines = ["validation (balanced accuracy; accuracy beside it)", head]
    ensemble = validation.ensemble
    rows: list[tuple[str, ScoreCell]] = [(r, ensemble.regime(r)) for r in REGIMES]
    rows.append(("overall", ensemble.total))
    for regime, cell in rows:
        line = (
            f"{regime:<16} {cell.n or 0:>6,}  {_f(cell.balanced_accuracy):>8}"
            f" {_f(cell.accuracy):>7}"
        )
        for name in names:
            table = baselines[name].table
            ref_cell = table.total if regime == "overall" else table.regime(regime)
            line += f" {_f(ref_cell.balanced_accuracy):>12}"
        if champion is not None:
            ch = champion.total if regime == "overall" else champion.regime(regime)
            line += f" {_f(ch.balanced_accuracy):>9}"
        else:
            line += f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def _diagnostics_text(diagnostics: Diagnostics) -> str:
    """The ensemble's per-regime 95% intervals and its calibration in two figures."""
    lines = [f"{'95% interval (ensemble)':<24} {'bal.acc':>16} {'acc':>16}"]
    for regime, found in diagnostics.intervals.items():
        cells = [found.get(m) for m in ("balanced_accuracy", "accuracy")]
        text = ["-" if c is None else f"[{c[0]:.3f}, {c[1]:.3f}]" for c in cells]
        lines.append(f"{regime:<24} {text[0]:>16} {text[1]:>16}")
    cal = diagnostics.calibration
    if cal is not None and cal.brier is not None:
        lines.append(
            f"calibration: Brier {cal.brier:.4f}; forecasting the base rate "
            f"{_f(cal.base_rate)} everywhere {cal.reference_brier or 0:.4f}"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _model_table(validation: Validation, refit: Mapping[str, float | None]) -> str:
    lines = [f"{'model':<20} {'bal.acc':>8} {'acc':>7} {'fit s':>7} {'refit s':>8}"]
    for name, cell in validation.models.items():
        lines.append(
            f"{name:<20} {_f(cell.balanced_accuracy):>8} {_f(cell.accuracy):>7}"
            f" {_seconds(cell.fit_seconds):>7} {_seconds(refit.get(name)):>8}"
        )
    return "\n".join(lines)


#: Each stage of `Windows.STAGES` in words.
STAGE_TITLES = {
    "fit": "fit the members",
    "vote": "weigh the vote",
    "validation": "validate (gate)",
    "refit": "refit (served)",
}


def window_rows(windows: Windows) -> list[tuple[str, Window | None]]:
    """(title, window) of each stage, in the order a retrain runs them."""
    return [
        (STAGE_TITLES[stage], found)
        for stage, found in zip(Windows.STAGES, windows.stages(), strict=True)
    ]


def _windows_table(windows: Windows) -> str:
    lines = [f"what each stage saw        {'first':>10}  {'last':>10}  {'rows':>8}"]
    for title, found in window_rows(windows):
        if found is None:
            lines.append(f"  {title:<24} {'-':>10}  {'-':>10}  {'-':>8}")
            continue
        lines.append(
            f"  {title:<24} {found.first or '-':>10}  {found.last or '-':>10}"
            f"  {found.rows or 0:>8,}"
        )
    if windows.refit_note:
        lines.append(f"  {windows.refit_note}")
    return "\n".join(lines)
