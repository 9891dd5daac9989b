"""The promotion gate: does a candidate show skill, and does it replace the champion?

Everything is measured on the same validation rows, on `gate.metric` (balanced accuracy by
default), with 95% intervals from one seeded moving-block bootstrap over trading days
(`daemon.training.scoring.Resampler`: `gate.bootstrap_samples` resamples of blocks of
`gate.bootstrap_block_days` days). Every predictor sees the same resamples, so the interval of
a difference is a paired interval. The rules, checked in this order; the first that fails
decides, and the decision names it:

1. `no_score`: the candidate has an overall score (not null for too few validation rows).
2. `unchanged`: its validation predictions (calls, and probabilities to within 1e-6) differ
   from the champion's -- or, without a champion, from the last registered candidate's. Equal
   ones are recorded as `unchanged`: nothing new to serve or to keep, no version added.
3. `naive_edge`: skill shown. The lower bound of the interval of (candidate - best naive
   reference) must be above `gate.min_edge`; the best reference is the one with the highest
   overall score.
4. `overall`: not shown worse than the champion. The lower bound of the paired interval of
   (candidate - champion) must be at least `-gate.tolerance`.
5. `regime_drop`: no regime shown worse than under the champion. A regime takes part only with
   at least `gate.min_regime_rows` validation rows and a score for both candidate and champion;
   it vetoes when the upper bound of its own paired interval of (candidate - champion) is below
   `-gate.tolerance` and the drop is above `gate.max_regime_drop` (0 by default: the interval
   alone decides). Crash and recovery are checked first.

Without a champion rules 2, 4 and 5 do not apply, and a promotion is recorded as
`no_champion`; otherwise as `passed`. With `gate.bootstrap_samples` 0 (or a metric undefined in
every resample) an interval collapses to its point difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from daemon.config.training import GateConfig, GateMetric
from daemon.domain import REGIMES
from daemon.training.report import Comparison, Figure
from daemon.training.scoring import METRICS, Resampler, point, reference_title

__all__ = [
    "Comparison",
    "Evidence",
    "GateDecision",
    "GateRule",
    "Predictor",
    "decide",
    "gather",
    "reference_title",
]

GateRule = Literal[
    "no_score", "unchanged", "naive_edge", "overall", "regime_drop", "no_champion", "passed"
]

#: Regimes in the order the regime rule checks them.
REGIME_ORDER: tuple[str, ...] = (
    "crash",
    "recovery",
    *(r for r in REGIMES if r not in ("crash", "recovery")),
)

# Scores are means of a few thousand 0/1 outcomes; a difference this small is float rounding,
# and must not turn "at least" into "below".
_EPS = 1e-9


@dataclass(frozen=True)
class Predictor:
    """A predictor's validation calls (0/1) and its probabilities of up."""

    pred: npt.NDArray[np.int8]
    proba: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Evidence:
    """What the gate decides on: the overall scores on `metric`, the comparison with the best
    naive reference (None when the candidate has no score), with the champion and, per regime
    with enough rows, with the champion in that regime; `unchanged` when the candidate predicts
    exactly as the champion does."""

    metric: GateMetric
    candidate: float | None
    edge: Comparison | None
    champion: Comparison | None = None
    regimes: Mapping[str, Comparison] = field(default_factory=dict)
    unchanged: bool = False
    #: whose predictions the candidate's equal, in words, when `unchanged`
    same_as: str = "the champion's"


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate is promoted, the rule that decided and the reason in words."""

    promoted: bool
    rule: GateRule
    reason: str
    evidence: Evidence

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of candidate minus champion (None without a champion)."""
        found = self.evidence.champion
        return None if found is None else found.interval


def decide(evidence: Evidence, gate: GateConfig) -> GateDecision:
    """Apply the gate rules (module docstring) to the evidence."""
    name = evidence.metric.replace("_", " ")

    def decision(promoted: bool, rule: GateRule, reason: str) -> GateDecision:
        return GateDecision(promoted, rule, reason, evidence)

    edge = evidence.edge
    if evidence.candidate is None or edge is None:
        return decision(
            False,
            "no_score",
            f"the candidate has no overall {name}: too few validation rows, or one class only",
        )
    if evidence.unchanged:
        return decision(
            False,
            "unchanged",
            f"unchanged: the candidate's validation predictions equal {evidence.same_as}; "
            "no version added",
        )
    if edge.low <= gate.min_edge + _EPS:
        return decision(
            False,
            "naive_edge",
            f"no skill shown: {name} {edge.words()} (the lower bound must be above min_edge "
            f"{gate.min_edge:g})",
        )
    passed = [f"skill shown: {name} {edge.words()}"]
    versus = evidence.champion
    if versus is not None:
        if versus.low < -gate.tolerance - _EPS:
            return decision(
                False,
                "overall",
                f"not shown as good as the champion: {name} {versus.words()} (the lower bound "
                f"must be at least -tolerance {-gate.tolerance:g}); {passed[0]}",
            )
        passed.append(f"{versus.words()}")
        for regime in REGIME_ORDER:
            found = evidence.regimes.get(regime)
            if found is None:
                continue
            if found.high < -gate.tolerance - _EPS and -found.difference > gate.max_regime_drop:
                return decision(
                    False,
                    "regime_drop",
                    f"{regime} shown worse than under the champion: {name} {found.words()} on "
                    f"{found.n} rows; {'; '.join(passed)}",
                )
        checked = [r for r in REGIME_ORDER if r in evidence.regimes]
        passed.append(
            f"no regime shown worse ({', '.join(checked)} compared)"
            if checked
            else f"no regime has {gate.min_regime_rows} validation rows to compare"
        )
        return decision(True, "passed", "; ".join(passed))
    return decision(True, "no_champion", "no champion yet; " + "; ".join(passed))


def gather(
    y: npt.ArrayLike,
    days: npt.ArrayLike,
    regimes: Sequence[str] | npt.NDArray[np.str_],
    candidate: Predictor,
    champion: Predictor | None,
    references: Mapping[str, Predictor],
    gate: GateConfig,
    *,
    min_n: int,
    seed: int,
    previous: tuple[str, Predictor] | None = None,
    target: str | None = None,
) -> tuple[Evidence, dict[str, dict[str, Figure]]]:
    """Measure everything the gate decides on, and the figures the report shows.

    `previous`, without a champion: (whose, predictions) of the last registered candidate, for
    the `unchanged` rule. `target` (the `label.target` or its key) names the references.

    Returns the evidence and, for "candidate", "champion" (when there is one) and each naive
    reference, every metric of `METRICS` overall with its 95% interval. A group with fewer
    than `min_n` rows has no score (as in `daemon.training.scoring.score`). Raises ValueError
    when no reference has an overall score while the candidate has one.
    """
    truth = np.asarray(y, dtype=np.int8)
    groups = np.asarray(regimes).astype(str)
    metric = gate.metric
    boot = Resampler(truth, days, gate.bootstrap_samples, gate.bootstrap_block_days, seed)
    named = {"candidate": candidate, **({} if champion is None else {"champion": champion})}
    named.update(references)
    samples = {
        who: {m: boot.figure(m, p.pred, p.proba) for m in METRICS} for who, p in named.items()
    }
    enough = len(truth) >= min_n and len(truth) > 0
    figures = {
        who: {
            m: Figure(
                point(m, truth, p.pred, p.proba) if enough else None,
                boot.interval(samples[who][m]) if enough else None,
            )
            for m in METRICS
        }
        for who, p in named.items()
    }
    ours = figures["candidate"][metric].value
    if ours is None:
        return Evidence(metric, None, None), figures
    refs = {k: figures[k][metric].value for k in references}
    scored = {k: v for k, v in refs.items() if v is not None}
    if not scored:
        raise ValueError(f"no naive reference has an overall {metric} (got {sorted(references)})")
    best = max(scored, key=lambda k: scored[k])

    def compare(against: str, theirs: float, title: str) -> Comparison:
        diff = samples["candidate"][metric] - samples[against][metric]
        return Comparison(title, ours - theirs, boot.interval(diff), len(truth))

    edge = compare(best, scored[best], reference_title(best, target))
    if champion is None:
        same = previous is not None and _same(candidate, previous[1])
        whose = "" if previous is None else previous[0]
        return Evidence(metric, ours, edge, unchanged=same, same_as=whose), figures
    theirs = figures["champion"][metric].value
    if theirs is None:
        raise ValueError(f"the champion has no overall {metric} where the candidate has one")
    unchanged = _same(candidate, champion)
    per_regime = {}
    for regime in REGIME_ORDER:
        rows = groups == regime
        n = int(rows.sum())
        if n < max(gate.min_regime_rows, min_n):
            continue
        sub = Resampler(
            truth[rows],
            np.asarray(days)[rows],
            gate.bootstrap_samples,
            gate.bootstrap_block_days,
            seed,
        )
        new = point(metric, truth[rows], candidate.pred[rows], candidate.proba[rows])
        old = point(metric, truth[rows], champion.pred[rows], champion.proba[rows])
        if new is None or old is None:
            continue
        diff = sub.labels(metric, candidate.pred[rows]) - sub.labels(metric, champion.pred[rows])
        per_regime[regime] = Comparison("the champion", new - old, sub.interval(diff), n)
    return (
        Evidence(
            metric,
            ours,
            edge,
            compare("champion", theirs, "the champion"),
            per_regime,
            unchanged,
        ),
        figures,
    )


#: Probabilities closer than this are the same prediction: a model saved and loaded again
#: (XGBoost's and LightGBM's native formats, a forest adding up its trees in another order)
#: can move the last bits of a probability.
SAME_PROBA = 1e-6


def _same(a: Predictor, b: Predictor) -> bool:
    """Whether two predictors make the same validation calls with the same probabilities (to
    within `SAME_PROBA`)."""
    if a.pred.shape != b.pred.shape or not np.array_equal(a.pred, b.pred):
        return False
    return bool(np.allclose(a.proba, b.proba, rtol=0.0, atol=SAME_PROBA))
