"""The retrain report as text: the per-regime validation table (balanced accuracy first, beside
the naive references and the champion), the models, the training mix and the gate's decision.
`regimed retrain` and `regimed demo` print it."""

from __future__ import annotations

from daemon.domain import REGIMES
from daemon.training.report import Gate, RetrainReport, ScoreCell, Validation

BASELINE_TITLES = {
    "always_up": "always up",
    "training_majority": "majority",
    "previous_return": "prev. return",
}


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(report: RetrainReport) -> str:
    """A readable summary of a retrain report."""
    lines: list[str] = []
    version = report.version or "(none)"
    lines.append(
        f"retrain {version}  trigger {report.trigger or '-'}  {report.duration_seconds or 0:.1f} s"
    )
    validation = report.validation
    if validation is not None:
        lines.append("")
        lines.append(_regime_table(report, validation))
        lines.append("")
        lines.append(_model_table(validation))
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
    gate = report.gate or Gate()
    lines.append("")
    verdict = "PROMOTED" if report.promoted else "NOT PROMOTED"
    reason = report.reason or "no reason recorded"
    lines.append(f"decision: {verdict} ({gate.rule or 'failed'}): {reason}")
    if gate.interval is not None:
        low, high = gate.interval
        lines.append(
            f"  candidate - champion {gate.metric}: 95% interval [{low:+.3f}, {high:+.3f}]"
        )
    return "\n".join(lines) + "\n"


def _regime_table(report: RetrainReport, validation: Validation) -> str:
    champion = report.champion
    baselines = validation.baselines
    names = [n for n in BASELINE_TITLES if n in baselines]
    head = f"{'regime':<16} {'n':>6}  {'bal.acc':>8} {'acc':>7}"
    for name in names:
        head += f" {BASELINE_TITLES[name]:>12}"
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


def _model_table(validation: Validation) -> str:
    lines = [f"{'model':<20} {'bal.acc':>8} {'acc':>7} {'fit s':>7}"]
    for name, cell in validation.models.items():
        seconds = cell.fit_seconds
        lines.append(
            f"{name:<20} {_f(cell.balanced_accuracy):>8} {_f(cell.accuracy):>7}"
            f" {'-' if seconds is None else f'{seconds:.1f}':>7}"
        )
    return "\n".join(lines)
