from __future__ import annotations

import json
import time
from functools import cache

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from daemon.config import Config
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import REGIMES
from daemon.pipeline.engine import history_rows
from daemon.pipeline.features import FEATURE_NAMES
from daemon.training.scoring import (
    BASELINE_NAMES,
    baseline_predictions,
    bootstrap_difference,
    reference_title,
    score,
)
from daemon.training.split import split_samples

# --- score ----------------------------------------------------------------------------------


def test_scores_per_regime_match_sklearn_and_are_null_below_the_minimum():
    rng = np.random.default_rng(0)
    regimes = np.array(["normal"] * 300 + ["crash"] * 50 + ["recovery"] * 200)
    y = rng.integers(0, 2, len(regimes))
    pred = np.where(rng.random(len(y)) < 0.7, y, 1 - y)
    scores = score(y, pred, regimes, min_n=100)
    for regime, n in (("normal", 300), ("recovery", 200)):
        rows = regimes == regime
        s = scores.per_regime[regime]
        assert s.n == n
        assert s.accuracy == pytest.approx(np.mean(y[rows] == pred[rows]))
        assert s.balanced_accuracy == pytest.approx(balanced_accuracy_score(y[rows], pred[rows]))
    assert scores.per_regime["crash"].n == 50
    assert scores.per_regime["crash"].accuracy is None
    assert scores.per_regime["crash"].balanced_accuracy is None
    assert scores.per_regime["low_volatility"].n == 0
    assert scores.per_regime["low_volatility"].balanced_accuracy is None
    assert scores.overall.n == 550
    assert scores.overall.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert scores.overall.value("accuracy") == scores.overall.accuracy


def test_overall_score_is_null_below_the_minimum_too():
    scores = score([1, 0, 1], [1, 1, 1], ["normal"] * 3, min_n=5)
    assert scores.overall.as_dict() == {"n": 3, "accuracy": None, "balanced_accuracy": None}


def test_balanced_accuracy_is_null_when_the_true_labels_hold_one_class():
    # sklearn would say 1.0 (the recall of "up"): a constant "up" would look perfect.
    scores = score([1, 1, 1, 1], [1, 1, 1, 0], ["crash"] * 4, min_n=1)
    crash = scores.per_regime["crash"]
    assert crash.accuracy == 0.75
    assert crash.balanced_accuracy is None


def test_scores_as_dict_has_the_report_shape_and_is_json():
    y = pd.array([1, 0, 1, 1], dtype="Int8")
    scores = score(y, [1, 0, 0, 1], pd.Categorical(["normal"] * 4, categories=REGIMES), 1)
    out = json.loads(json.dumps(scores.as_dict()))
    assert set(out) == {"per_regime", "overall"}
    assert list(out["per_regime"]) == list(REGIMES)
    for entry in [*out["per_regime"].values(), out["overall"]]:
        assert set(entry) == {"n", "accuracy", "balanced_accuracy"}
    # Recall of up 2/3, of down 1.
    assert out["overall"] == {"n": 4, "accuracy": 0.75, "balanced_accuracy": pytest.approx(5 / 6)}
    assert out["per_regime"]["crash"] == {"n": 0, "accuracy": None, "balanced_accuracy": None}


def test_score_rejects_inputs_of_different_lengths_and_missing_labels():
    with pytest.raises(ValueError, match="differ in length"):
        score([1, 0], [1], ["normal", "normal"], 1)
    with pytest.raises(ValueError, match="missing"):
        score(pd.array([1, None], dtype="Int8"), [1, 0], ["normal"] * 2, 1)


# --- naive references -----------------------------------------------------------------------


def test_baselines_on_a_hand_made_case():
    names = ["ret_1", "ret_5", "vol_5"]
    X = np.array([[0.01, -0.02, 0.1], [-0.01, 0.03, 0.1], [0.0, 0.0, 0.1]], dtype=np.float32)
    out = baseline_predictions([0, 0, 1], X, names, horizon_bars=5)
    assert list(out) == list(BASELINE_NAMES)
    assert out["always_up"].tolist() == [1, 1, 1]
    assert out["training_majority"].tolist() == [0, 0, 0]
    # ret_5 is the previous return over the 5-bar label horizon; zero is not up.
    assert out["previous_return"].tolist() == [0, 1, 0]


@pytest.mark.parametrize("target", ["volatility", "drawdown:h=5:threshold=0.05"])
def test_for_volatility_and_drawdown_the_previous_return_says_1_after_a_fall(target):
    names = ["ret_1", "ret_5", "vol_5"]
    X = np.array([[0.01, -0.02, 0.1], [-0.01, 0.03, 0.1], [0.0, 0.0, 0.1]], dtype=np.float32)
    out = baseline_predictions([0, 0, 1], X, names, horizon_bars=5, target=target)
    assert out["previous_return"].tolist() == [1, 0, 0]  # zero is not a fall
    assert out["always_up"].tolist() == [1, 1, 1]
    assert reference_title("previous_return", target) == "previous fall"


def test_previous_return_falls_back_to_ret_1_and_majority_ties_go_up():
    names = ["ret_1", "ret_5"]
    X = np.array([[0.01, -0.02], [-0.01, 0.03]])
    out = baseline_predictions([0, 1], X, names, horizon_bars=3)
    assert out["previous_return"].tolist() == [1, 0]
    assert out["training_majority"].tolist() == [1, 1]


def test_baselines_need_training_labels_and_the_feature_columns():
    with pytest.raises(ValueError, match="training labels"):
        baseline_predictions([], np.zeros((2, 1)), ["ret_1"], 5)
    with pytest.raises(ValueError, match="'ret_1'"):
        baseline_predictions([1], np.zeros((2, 1)), ["vol_5"], 5)
    with pytest.raises(ValueError, match="shape"):
        baseline_predictions([1], np.zeros((2, 3)), ["ret_1"], 5)


# --- bootstrap ------------------------------------------------------------------------------


def noisy_case(
    n_days: int, per_day: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Model a is right 60% of the time, model b 52%."""
    rng = np.random.default_rng(seed)
    days = np.repeat(np.arange(n_days), per_day)
    y = rng.integers(0, 2, len(days))
    a = np.where(rng.random(len(y)) < 0.60, y, 1 - y)
    b = np.where(rng.random(len(y)) < 0.52, y, 1 - y)
    return y, a, b, days


@pytest.mark.parametrize("metric", ["balanced_accuracy", "accuracy"])
def test_bootstrap_interval_contains_the_point_difference(metric):
    y, a, b, days = noisy_case(1000)
    interval = bootstrap_difference(y, a, b, days, metric, 1000, 5, seed=1)
    assert interval is not None
    low, high = interval
    if metric == "balanced_accuracy":
        point = balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b)
    else:
        point = np.mean(a == y) - np.mean(b == y)
    assert low < point < high
    assert low > 0  # a is really better, and 5,000 rows show it


def test_bootstrap_is_deterministic_under_the_seed():
    y, a, b, days = noisy_case(300)
    first = bootstrap_difference(y, a, b, days, "balanced_accuracy", 500, 5, seed=7)
    assert first == bootstrap_difference(y, a, b, days, "balanced_accuracy", 500, 5, seed=7)
    assert first != bootstrap_difference(y, a, b, days, "balanced_accuracy", 500, 5, seed=8)


def test_bootstrap_interval_narrows_with_more_data():
    def width(n_days: int) -> float:
        y, a, b, days = noisy_case(n_days)
        interval = bootstrap_difference(y, a, b, days, "balanced_accuracy", 1000, 5, seed=3)
        assert interval is not None
        return interval[1] - interval[0]

    small, large = width(100), width(1600)
    # Four times the rows ... sixteen: the width shrinks about fourfold.
    assert large < small / 2.5


def test_bootstrap_of_identical_predictions_is_zero():
    y, a, _, days = noisy_case(50)
    assert bootstrap_difference(y, a, a, days, "accuracy", 200, 5, seed=0) == (0.0, 0.0)


def test_bootstrap_is_none_when_there_is_nothing_to_resample():
    y, a, b, days = noisy_case(20)
    assert bootstrap_difference(y, a, b, days, "accuracy", 0, 5, seed=0) is None
    assert bootstrap_difference([], [], [], [], "accuracy", 100, 5, seed=0) is None
    ones = np.ones(10, dtype=int)
    assert bootstrap_difference(ones, ones, ones, range(10), "balanced_accuracy", 100, 5, 0) is None
    # Accuracy is defined with one class; more blocks than days is fine.
    assert bootstrap_difference(ones, ones, 1 - ones, range(10), "accuracy", 100, 50, 0) == (
        1.0,
        1.0,
    )


def test_bootstrap_groups_rows_by_day_and_keeps_days_whole():
    # Each day is all right for a or all wrong: with whole days resampled, the accuracy of a is
    # a multiple of 1/10 (10 days of equal size).
    days = np.repeat(pd.date_range("2020-01-01", periods=10).to_numpy(), 3)
    y = np.ones(30, dtype=int)
    a = np.repeat(np.array([1, 0] * 5), 3)
    interval = bootstrap_difference(y, a, np.zeros(30, dtype=int), days, "accuracy", 300, 1, 0)
    assert interval is not None
    low, high = interval
    assert low * 10 == pytest.approx(round(low * 10))
    assert high * 10 == pytest.approx(round(high * 10))


def test_bootstrap_is_fast():
    y, a, b, days = noisy_case(1000)
    start = time.perf_counter()
    bootstrap_difference(y, a, b, days, "balanced_accuracy", 1000, 5, seed=0)
    assert time.perf_counter() - start < 0.5


# --- the bundled history --------------------------------------------------------------------


@cache
def bundled_samples() -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled batch-path samples of the bundled S&P 500 and NASDAQ histories."""
    config = Config()
    vix = read_vix_csv(bundled_path("vix"))
    rows = []
    for symbol, name in (("^GSPC", "sp500"), ("^IXIC", "nasdaq")):
        _, samples = history_rows(config, symbol, read_bars_csv(bundled_path(name)), vix)
        rows += [r for r in samples if r.label is not None]
    meta = pd.DataFrame(
        {
            "symbol": pd.Categorical([r.symbol for r in rows]),
            "source": pd.Categorical([r.source for r in rows], categories=["live", "archive"]),
            "regime": pd.Categorical([r.regime for r in rows], categories=list(REGIMES)),
            "event": pd.Categorical([r.event for r in rows]),
            "ts": pd.to_datetime([r.ts for r in rows]),
            "weight": [r.weight for r in rows],
            "label": pd.array([r.label for r in rows], dtype="Int8"),
        }
    )
    return meta, np.stack([r.features for r in rows])


def test_always_up_on_the_bundled_history():
    meta, X = bundled_samples()
    config = Config()
    split = split_samples(meta, config.training, config.label, config.archive.events)
    y_val = meta["label"].iloc[split.validation]
    preds = baseline_predictions(
        meta["label"].iloc[split.train], X[split.validation], FEATURE_NAMES, 5
    )
    regimes = meta["regime"].iloc[split.validation]
    up = score(y_val, preds["always_up"], regimes, 200).overall
    assert up.accuracy == pytest.approx(0.58, abs=0.02)
    assert up.balanced_accuracy == 0.5
    everything = score(meta["label"], np.ones(len(meta)), meta["regime"], 200).overall
    assert everything.accuracy == pytest.approx(0.56, abs=0.02)
    assert everything.balanced_accuracy == 0.5
    # The majority of 5-day labels in training is "up" too; momentum is no better than a coin.
    assert preds["training_majority"].tolist() == preds["always_up"].tolist()
    momentum = score(y_val, preds["previous_return"], regimes, 200).overall
    assert momentum.balanced_accuracy == pytest.approx(0.5, abs=0.05)


def test_point_figures_match_sklearn():
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from daemon.training.scoring import point

    rng = np.random.default_rng(5)
    y = (rng.random(500) < 0.6).astype(np.int8)
    proba = np.round(rng.random(500), 2)  # ties, as a constant reference has
    pred = (proba > 0.5).astype(np.int8)
    assert point("auc", y, pred, proba) == pytest.approx(roc_auc_score(y, proba))
    assert point("brier", y, pred, proba) == pytest.approx(brier_score_loss(y, proba))
    assert point("balanced_accuracy", y, pred, proba) == pytest.approx(
        balanced_accuracy_score(y, pred)
    )
    assert point("auc", np.ones(5), np.ones(5), np.ones(5)) is None


def test_resampled_figures_are_paired_and_deterministic():
    from daemon.training.scoring import Resampler

    rng = np.random.default_rng(6)
    y = (rng.random(400) < 0.6).astype(np.int8)
    days = np.repeat(np.arange(200), 2)
    proba = rng.random(400)
    boot = Resampler(y, days, 200, 5, seed=1)
    auc = boot.auc(proba)
    assert auc.shape == (200,)
    assert np.array_equal(auc, Resampler(y, days, 200, 5, seed=1).auc(proba))
    assert Resampler.interval(boot.auc(proba) - auc) == (0.0, 0.0)
    low, high = Resampler.interval(boot.brier(proba))
    assert low < np.mean((proba - y) ** 2) < high
