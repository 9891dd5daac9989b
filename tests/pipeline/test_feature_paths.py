"""Every feature path gives the same rows: the contract of the feature engine.

Four paths compute the feature rows of a symbol, each where it pays off: per event (the
consumer's path for a few symbols), the bank (many symbols per numpy step), the batch path (a
whole history at once: training, the archive, evaluation) and restore (a symbol's state rebuilt
from stored bars, then fed per event). The live daemon stores the per-event path's rows, so
that path is the reference: each other path must give the same rows, on the same days, to 1e-9.

The history is the bundled S&P 500 from mid-2013 to 2018 with the bundled VIX: the VIX proxy
first, then the real VIX from 2014, the August 2015 and February 2018 sell-offs, and more than
RING bars after the warm-up, so every window fills and every ring buffer wraps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from daemon.domain import REGIMES
from daemon.pipeline.features import (
    FEATURE_NAMES,
    SymbolFeatures,
    compute_features,
    restore_features,
    warmup_bars,
)
from daemon.pipeline.features.bank import FeatureBank, ready
from daemon.pipeline.features.defs import RING
from tests.factories import assert_same_rows, bundled_slice

TOL = 1e-9
COLUMNS = ("open", "high", "low", "close", "volume")
#: Bars fed per event between two restores in the restore path.
RESTORE_EVERY = 97

#: (bars, VIX per bar (NaN unknown), proxy flag per bar, regime per bar (None undecided)).
History = tuple[pd.DataFrame, list[float], list[bool], list[str | None]]
Path = Callable[[History], pd.DataFrame]


def frame(rows: list[object], days: list[object]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.Index(days), columns=list(FEATURE_NAMES), dtype=float)


def feed(state: SymbolFeatures, history: History, start: int, stop: int) -> pd.DataFrame:
    """Feed bars start..stop-1 to `state` one by one; the rows it emits, indexed by day."""
    bars, vix, proxy, regimes = history
    rows, days = [], []
    for j in range(start, stop):
        o, h, low, c, v = (float(bars[col].iat[j]) for col in COLUMNS)
        row = state.update(o, h, low, c, v, vix[j], proxy[j], regimes[j])
        if row is not None:
            rows.append(row)
            days.append(bars.index[j])
    return frame(rows, days)


def per_event(history: History) -> pd.DataFrame:
    """The consumer's path: one `SymbolFeatures.update` per bar."""
    return feed(SymbolFeatures(), history, 0, len(history[0]))


def batch(history: History) -> pd.DataFrame:
    """The vectorised path over the whole history."""
    bars, vix, proxy, regimes = history
    return compute_features(bars, vix, proxy, regimes)


def bank(history: History) -> pd.DataFrame:
    """Per event until the recursive averages are seeded, then one `FeatureBank.update` step
    per bar, as the pipeline moves a symbol into the bank."""
    bars, vix, proxy, regimes = history
    state = SymbolFeatures()
    while not ready(state):
        assert feed(state, history, state.bars, state.bars + 1).empty  # inside the warm-up
    j = state.bars
    engine = FeatureBank(capacity=1)
    slots = np.array([engine.add("^GSPC", state)])
    codes = {r: i for i, r in enumerate(REGIMES)}
    rows, days = [], []
    for k in range(j, len(bars)):
        prices = [np.array([float(bars[col].iat[k])]) for col in COLUMNS]
        features, emitted = engine.update(
            slots,
            *prices,
            np.array([vix[k]]),
            np.array([proxy[k]]),
            np.array([-1 if regimes[k] is None else codes[regimes[k]]]),
        )
        if emitted[0]:
            rows.append(features[0])
            days.append(bars.index[k])
    assert engine.withheld[slots[0]] == len(bars) - len(rows)
    return frame(rows, days)


def restore(history: History) -> pd.DataFrame:
    """Restart every RESTORE_EVERY bars: the state rebuilt from all bars before, then fed per
    event up to the next restart (restores before, inside and after the warm-up)."""
    bars, vix, proxy, regimes = history
    parts = []
    for start in range(0, len(bars), RESTORE_EVERY):
        state = restore_features(bars.iloc[:start], vix[:start], proxy[:start], regimes[:start])
        assert state.bars == start
        parts.append(feed(state, history, start, min(start + RESTORE_EVERY, len(bars))))
    return pd.concat(parts)


PATHS: dict[str, Path] = {"bank": bank, "batch": batch, "restore": restore}


@pytest.fixture(scope="module")
def history() -> History:
    bars, labels = bundled_slice("sp500", "2013-06-03", "2018-12-31")
    regimes = [r if isinstance(r, str) else None for r in labels["regime"]]
    return bars, labels["vix"].tolist(), (labels["vix_source"] == "proxy").tolist(), regimes


@pytest.fixture(scope="module")
def reference(history: History) -> pd.DataFrame:
    return per_event(history)


def test_the_history_exercises_every_window_both_vix_sources_and_the_stress_regimes(
    history, reference
):
    bars, _, proxy, regimes = history
    assert len(reference) > warmup_bars() + RING  # every window fills, every ring wraps
    assert reference.index[0] == bars.index[warmup_bars()]
    assert any(proxy) and not all(proxy)
    assert {"high_volatility", "normal", "low_volatility"} <= set(filter(None, regimes))
    assert np.isfinite(reference.to_numpy()).all()


@pytest.mark.parametrize("path", PATHS)
def test_every_feature_path_gives_the_per_event_rows(path, history, reference):
    assert_same_rows(PATHS[path](history), reference, f"{path} vs per event", TOL)
