"""Regime-balanced sampling of training rows and regime loss weights.

Market history is mostly calm: left alone, a model learns calm days and forgets crashes. The
sampler draws the training part to a target regime mix (oversampling minorities with
replacement, undersampling majorities without), and the weights make a crash row count more in
the loss. Both are deterministic under the configured seed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from daemon.domain import REGIMES
from daemon.errors import SamplingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleMix:
    """What balancing did: counts before and after, and regimes whose share was spread."""

    indices: np.ndarray
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    absent: tuple[str, ...]


def effective_mix(present: Sequence[str], mix: Mapping[str, float]) -> dict[str, float]:
    """The target mix over the regimes present: absent shares spread in proportion."""
    total = sum(mix.get(r, 0.0) for r in present)
    if total <= 0:
        raise SamplingError(
            f"target mix {dict(mix)} gives no share to any regime in the input "
            f"({', '.join(sorted(present)) or 'none'})"
        )
    return {r: mix.get(r, 0.0) / total for r in present}


def quotas(shares: Mapping[str, float], size: int) -> dict[str, int]:
    """Whole-row quotas summing to `size`, each within one row of size * share."""
    raw = {r: size * s for r, s in shares.items()}
    out = {r: int(np.floor(v)) for r, v in raw.items()}
    left = size - sum(out.values())
    # Largest remainder first; ties broken by regime order so the result is deterministic.
    order = sorted(raw, key=lambda r: (-(raw[r] - out[r]), _rank(r)))
    for r in order[:left]:
        out[r] += 1
    return out


def _rank(regime: str) -> int:
    return REGIMES.index(regime) if regime in REGIMES else len(REGIMES)


def balance(
    regimes: Sequence[str],
    mix: Mapping[str, float],
    seed: int,
    size: int | None = None,
) -> SampleMix:
    """Row indices that bring `regimes` to the target `mix`, `size` rows in all (default: as many
    as went in). Every row of an oversampled regime appears at least once; the result is sorted,
    so time order is kept.
    """
    labels = np.asarray(regimes, dtype=object)
    n = len(labels)
    size = n if size is None or size == 0 else size
    before = Counter(str(r) for r in labels)
    unknown = sorted(set(before) - set(mix))
    if unknown:
        raise SamplingError(f"regime {unknown[0]!r} has no share in the target mix")
    if n == 0:
        return SampleMix(np.empty(0, dtype=np.int64), {}, {}, tuple(r for r in mix))
    present = [r for r in REGIMES if before.get(r)] + sorted(r for r in before if r not in REGIMES)
    absent = tuple(r for r in mix if not before.get(r) and mix[r] > 0)
    for regime in absent:
        logger.warning(
            "regime %s is absent from the training data: its share %.1f%% is spread over "
            "the others in proportion",
            regime,
            100 * mix[regime],
        )
    targets = quotas(effective_mix(present, mix), size)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for regime in present:
        rows = np.flatnonzero(labels == regime)
        want = targets[regime]
        if want <= len(rows):
            picked.append(rng.choice(rows, size=want, replace=False))
        else:
            picked.append(rows)
            picked.append(rng.choice(rows, size=want - len(rows), replace=True))
    indices = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    after = Counter(str(r) for r in labels[indices])
    return SampleMix(indices, dict(before), dict(after), absent)


@dataclass(frozen=True)
class WeightReport:
    """Share of the total loss weight per regime and the effective dataset size ratio."""

    weight_share: dict[str, float]
    effective_size_ratio: float


def row_weights(regimes: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """The loss weight of each row, from its regime."""
    try:
        return np.array([weights[r] for r in regimes], dtype=np.float64)
    except KeyError as exc:
        raise SamplingError(f"regime {exc.args[0]!r} has no weight") from None


def weight_report(counts: Mapping[str, float], weights: Mapping[str, float]) -> WeightReport:
    """For rows counted per regime: each regime's share of the total weight, and the total
    weight over the row count (how many unweighted rows the weighted set is "worth")."""
    rows = sum(counts.values())
    mass = {r: counts[r] * weights[r] for r in counts}
    total = sum(mass.values())
    if rows <= 0 or total <= 0:
        raise SamplingError("weight report of an empty sample")
    return WeightReport({r: mass[r] / total for r in counts}, total / rows)
