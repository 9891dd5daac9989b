from __future__ import annotations

import math

import pandas as pd
import pytest

from daemon.config import LabelConfig
from daemon.pipeline.labels import SymbolLabels, future_labels, label_of


def test_label_is_one_only_above_the_threshold():
    c = LabelConfig()
    assert label_of(c, 100.0, 101.0) == 1
    assert label_of(c, 100.0, 100.0) == 0  # a flat week is not "up"
    assert label_of(c, 100.0, 99.0) == 0
    c = LabelConfig(threshold=0.01)
    assert label_of(c, 100.0, 100.0 * math.exp(0.0101)) == 1
    assert label_of(c, 100.0, 100.0 * math.exp(0.0099)) == 0


def test_rows_stay_pending_until_the_future_bar_arrives():
    c = LabelConfig(horizon_bars=2)
    s = SymbolLabels(c)
    assert s.update("d1", 100.0) is None
    assert s.update("d2", 90.0) is None
    matured = s.update("d3", 101.0)
    assert (matured.ts, matured.label) == ("d1", 1)
    matured = s.update("d4", 80.0)
    assert (matured.ts, matured.label) == ("d2", 0)


def test_batch_and_per_event_labels_agree_on_the_bundled_history(sp500):
    c = LabelConfig()
    batch = future_labels(c, sp500["close"])
    assert batch.isna().sum() == c.horizon_bars
    assert batch.iloc[-c.horizon_bars :].isna().all()
    s = SymbolLabels(c)
    event = {}
    for day, close in sp500["close"].items():
        matured = s.update(day.strftime("%Y-%m-%d"), float(close))
        if matured is not None:
            event[matured.ts] = matured.label
    expected = {d.strftime("%Y-%m-%d"): int(v) for d, v in batch.dropna().items()}
    assert event == expected
    up_share = sum(expected.values()) / len(expected)
    assert 0.55 < up_share < 0.62  # about 58% of 5-day returns are up in this history


@pytest.mark.parametrize("h", [1, 5, 20])
def test_horizon_is_configuration(h):
    close = pd.Series([float(i + 1) for i in range(30)])
    labels = future_labels(LabelConfig(horizon_bars=h), close)
    assert labels.isna().sum() == h
    assert (labels.dropna() == 1).all()
