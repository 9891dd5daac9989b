"""The retrain report as text: the per-regime validation table (balanced accuracy first, beside
the naive references and the champion), the models, the training mix and the gate's decision.
`regimed retrain` and `regimed demo` print it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.domain import REGIMES

BASELINE_TITLES = {
    "always_up": "always up",
    "training_majority": "majority",
    "previous_return": "prev. return",
}


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(report: Mapping[str, Any]) -> str:
    """A readable summary of a retrain report."""
    lines: list[str] = []
    version = report.get("version") or "(none)"
    lines.append(
        f"retrain {version}  trigger {report.get('trigger') or '-'}  "
        f"{report.get('duration_seconds', 0):.1f} s"
    )
    validation = report.get("validation")
    if validation:
        lines.append("")
        lines.append(_regime_table(report))
        lines.append("")
        lines.append(_model_table(validation))
    training = report.get("training")
    if training:
        lines.append("")
        lines.append("training mix (fit part)    before     after   weight share")
        before = training["regime_counts_before"]
        after = training["regime_counts_after"]
        shares = training["weight_share"]
        for regime in REGIMES:
            lines.append(
                f"  {regime:<22} {before.get(regime, 0):>8,} {after.get(regime, 0):>9,}"
                f"   {_pct(shares.get(regime)):>12}"
            )
        lines.append(f"  effective size {training['effective_size_ratio']:.2f}x")
    split = report.get("split")
    if split:
        held = ", ".join(split["held_out_events"]) or "none"
        lines.append(
            f"split: validation from {split['cutoff']} ({split['validation_rows']:,} rows), "
            f"training to {split['train_end']} ({split['train_rows']:,} rows, "
            f"{split['purged_rows']:,} purged); archive events held out: {held}"
        )
    gate = report.get("gate") or {}
    interval = gate.get("interval")
    lines.append("")
    verdict = "PROMOTED" if report.get("promoted") else "NOT PROMOTED"
    reason = report.get("reason") or "no reason recorded"
    lines.append(f"decision: {verdict} ({gate.get('rule') or 'failed'}): {reason}")
    if interval:
        lines.append(
            f"  candidate - champion {gate['metric']}: 95% interval "
            f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
        )
    return "\n".join(lines) + "\n"


def _regime_table(report: Mapping[str, Any]) -> str:
    validation = report["validation"]
    champion = report.get("champion")
    baselines = validation["baselines"]
    names = [n for n in BASELINE_TITLES if n in baselines]
    head = f"{'regime':<16} {'n':>6}  {'bal.acc':>8} {'acc':>7}"
    for name in names:
        head += f" {BASELINE_TITLES[name]:>12}"
    head += f" {'champion':>9}"
    lines = ["validation (balanced accuracy; accuracy beside it)", head]
    rows = [(r, validation["per_regime"].get(r, {})) for r in REGIMES]
    rows.append(("overall", validation["overall"]))
    for regime, cell in rows:
        line = (
            f"{regime:<16} {cell.get('n', 0):>6,}  {_f(cell.get('balanced_accuracy')):>8}"
            f" {_f(cell.get('accuracy')):>7}"
        )
        for name in names:
            ref = baselines[name]
            ref_cell = ref if regime == "overall" else ref.get("per_regime", {}).get(regime, {})
            line += f" {_f(ref_cell.get('balanced_accuracy')):>12}"
        if champion:
            ch = champion["overall"] if regime == "overall" else champion["per_regime"][regime]
            line += f" {_f(ch.get('balanced_accuracy')):>9}"
        else:
            line += f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def _model_table(validation: Mapping[str, Any]) -> str:
    lines = [f"{'model':<20} {'bal.acc':>8} {'acc':>7} {'fit s':>7}"]
    for name, cell in validation["models"].items():
        seconds = cell.get("fit_seconds")
        lines.append(
            f"{name:<20} {_f(cell['balanced_accuracy']):>8} {_f(cell['accuracy']):>7}"
            f" {'-' if seconds is None else f'{seconds:.1f}':>7}"
        )
    return "\n".join(lines)
