"""The promotion gate: does a candidate replace the champion?

Candidate and champion are scored on the same validation sets, on `gate.metric` (balanced
accuracy by default). The candidate is promoted only when all of these hold, checked in this
order; the first that fails decides, and the decision names it:

1. `no_score`: the candidate has an overall score (not null for too few validation rows).
2. `overall`: its overall score is at least the champion's minus `gate.tolerance`.
3. `regime_drop`: no regime scored for both drops by more than `gate.max_regime_drop`; crash
   and recovery are checked first, as the regimes the archive and the weights exist for.
4. `naive_edge`: it beats the best naive reference by at least `gate.min_edge`.

Without a champion only rules 1 and 4 apply, and a promotion is recorded as `no_champion`;
otherwise as `passed`. Rules 2 and 3 compare point scores; the bootstrap interval of the
candidate-minus-champion difference is reported beside them so a reader can tell a real gain
from noise, but does not decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from daemon.config.training import GateConfig
from daemon.domain import REGIMES
from daemon.training.scoring import Scores

__all__ = ["GateDecision", "GateRule", "decide"]

GateRule = Literal["no_score", "overall", "regime_drop", "naive_edge", "no_champion", "passed"]

#: Regimes in the order the regime-drop rule checks them.
REGIME_ORDER: tuple[str, ...] = (
    "crash",
    "recovery",
    *(r for r in REGIMES if r not in ("crash", "recovery")),
)

# Scores are means of a few thousand 0/1 outcomes; a difference this small is float rounding,
# and must not turn "at least" into "below".
_EPS = 1e-9


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate is promoted, the rule that decided, a sentence with the figures,
    and the 95% bootstrap interval of candidate minus champion (None when not computed)."""

    promoted: bool
    rule: GateRule
    reason: str
    interval: tuple[float, float] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "rule": self.rule,
            "reason": self.reason,
            "interval": None if self.interval is None else list(self.interval),
        }


def decide(
    candidate: Scores,
    champion: Scores | None,
    baselines: Mapping[str, Scores],
    gate: GateConfig,
    interval: tuple[float, float] | None,
) -> GateDecision:
    """Apply the gate rules (module docstring) to scores on one validation set.

    Raises ValueError when candidate and champion were not scored on the same rows (their
    group sizes differ) or no naive reference has an overall score while the candidate does:
    both are the caller's mistakes, not a verdict on the model.
    """
    metric = gate.metric
    name = metric.replace("_", " ")

    def decision(promoted: bool, rule: GateRule, reason: str) -> GateDecision:
        if interval is not None and champion is not None:
            low, high = interval
            reason += f" (candidate - champion 95% interval [{low:+.3f}, {high:+.3f}])"
        return GateDecision(promoted, rule, reason, interval)

    ours = candidate.overall.value(metric)
    if ours is None:
        return decision(
            False,
            "no_score",
            f"the candidate has no overall {name}: {candidate.overall.n} validation rows, "
            "below the minimum or of one class only",
        )
    passed = []
    if champion is not None:
        _check_same_rows(candidate, champion)
        theirs = champion.overall.value(metric)
        if theirs is None:
            raise ValueError(f"the champion has no overall {name} where the candidate has one")
        if ours < theirs - gate.tolerance - _EPS:
            return decision(
                False,
                "overall",
                f"overall {name} {ours:.3f} vs champion {theirs:.3f}: below the champion minus "
                f"tolerance {gate.tolerance:g} ({theirs - gate.tolerance:.3f})",
            )
        passed.append(f"overall {name} {ours:.3f} vs champion {theirs:.3f}")
        for regime in REGIME_ORDER:
            new = candidate.per_regime[regime].value(metric)
            old = champion.per_regime[regime].value(metric)
            if new is None or old is None:
                continue
            if old - new > gate.max_regime_drop + _EPS:
                return decision(
                    False,
                    "regime_drop",
                    f"{regime} {name} {new:.3f} vs champion {old:.3f}: drops {old - new:.3f} > "
                    f"max_regime_drop {gate.max_regime_drop:g}",
                )
        passed.append(f"no regime drops more than {gate.max_regime_drop:g}")
    scored = {k: s.overall.value(metric) for k, s in baselines.items()}
    refs = {k: v for k, v in scored.items() if v is not None}
    if not refs:
        raise ValueError(f"no naive reference has an overall {name} (got {sorted(baselines)})")
    best = max(refs, key=lambda k: refs[k])
    edge = ours - refs[best]
    if edge < gate.min_edge - _EPS:
        return decision(
            False,
            "naive_edge",
            f"overall {name} {ours:.3f} vs best naive reference {best} {refs[best]:.3f}: "
            f"edge {edge:+.3f} < min_edge {gate.min_edge:g}",
        )
    passed.append(
        f"beats best naive reference {best} {refs[best]:.3f} by {edge:+.3f} "
        f">= min_edge {gate.min_edge:g}"
    )
    if champion is None:
        return decision(True, "no_champion", "no champion yet; " + "; ".join(passed))
    return decision(True, "passed", "; ".join(passed))


def _check_same_rows(candidate: Scores, champion: Scores) -> None:
    """Candidate and champion must be scored on the same validation sets."""
    pairs = [("overall", candidate.overall.n, champion.overall.n)]
    pairs += [(r, candidate.per_regime[r].n, champion.per_regime[r].n) for r in REGIMES]
    for group, ours, theirs in pairs:
        if ours != theirs:
            raise ValueError(
                f"candidate and champion were scored on different validation sets: {group} has "
                f"{ours} rows for the candidate, {theirs} for the champion"
            )
