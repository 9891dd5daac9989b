"""The eight base models: built as configured, fitted with the loss weights, deterministic.

Data: the bundled S&P 500 features and 5-day labels of 2006-2011 (about 1,500 rows, crash and
recovery included), weighted by the default regime loss weights, as the trainer weighs them.
Small hyper-parameters keep every fit under a second.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from daemon.config import Config, LabelConfig, RegimeConfig
from daemon.config.training import MODEL_NAMES, ModelsConfig, SVMConfig
from daemon.errors import ConfigError, ModelFitError
from daemon.pipeline.features import FEATURE_NAMES, features_from_labels
from daemon.pipeline.labels import future_labels
from daemon.pipeline.regime import label_history
from daemon.registry.ensemble import FEATURE_LIMIT, finite_features, positive_proba
from daemon.training.fitting import fit_model
from daemon.training.models import SubsampledClassifier, build_model
from daemon.training.sampling import row_weights
from tests.factories import SMALL_MODELS as SMALL

SUBSAMPLED_SVM = dataclasses.replace(SMALL, svm=SVMConfig(method="subsample", max_samples=400))
#: Every model, the SVM in both of its forms.
VARIANTS = [(name, SMALL) for name in MODEL_NAMES] + [("svm", SUBSAMPLED_SVM)]
IDS = [*MODEL_NAMES, "svm-subsample"]

#: Feature rows (float32), labels (int8) and regime loss weights, in time order.
Data = tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def data(sp500: pd.DataFrame, vix: pd.Series) -> Data:
    """(X float32, y int8, regime weights) of the S&P 500 in 2006-2011, in time order."""
    labels = label_history(RegimeConfig(), sp500["close"], vix)
    features = features_from_labels(sp500, labels)
    y = future_labels(LabelConfig(), sp500["close"]).reindex(features.index)
    years = pd.DatetimeIndex(features.index).year
    keep = (years >= 2006) & (years <= 2011) & y.notna().to_numpy()
    regimes = labels["regime"].reindex(features.index)[keep]
    assert {"crash", "recovery", "normal"} <= set(regimes)
    weights = row_weights(list(regimes), Config().weights.regime.as_dict())
    X = features[keep].to_numpy(dtype=np.float32)
    return X, y[keep].to_numpy(dtype=np.int8), weights


def fit(
    name: str,
    config: ModelsConfig,
    data: Data,
    *,
    weighted: bool = True,
    n_jobs: int = 1,
    seed: int = 7,
) -> Any:
    """`fit_model` on `data` with its regime weights, or (weighted=False) with weights of 1."""
    X, y, w = data
    weights = w if weighted else np.ones_like(w)
    return fit_model(name, X, y, weights, config, n_jobs=n_jobs, seed=seed)


@pytest.mark.parametrize(("name", "config"), VARIANTS, ids=IDS)
def test_the_weights_change_what_every_model_learns(name, config, data):
    weighted = positive_proba(fit(name, config, data), data[0])
    plain = positive_proba(fit(name, config, data, weighted=False), data[0])
    # Same seed, same rows, weights passed both times: only their values differ (and the next
    # test shows that a refit with the same weights is identical).
    assert np.abs(weighted - plain).max() > 1e-4


@pytest.mark.parametrize(("name", "config"), VARIANTS, ids=IDS)
def test_every_model_fits_without_weights(name, config, data):
    X, y, _ = data
    model = fit_model(name, X, y, None, config, n_jobs=1, seed=7)
    assert positive_proba(model, X).shape == (len(y),)


@pytest.mark.parametrize(("name", "config"), VARIANTS, ids=IDS)
def test_the_same_seed_gives_the_same_probabilities_on_one_thread_or_two(name, config, data):
    first = positive_proba(fit(name, config, data, n_jobs=2), data[0])
    second = positive_proba(fit(name, config, data, n_jobs=2), data[0])
    single = positive_proba(fit(name, config, data, n_jobs=1), data[0])
    assert first.dtype == np.float64
    assert first.shape == (len(data[1]),)
    assert ((first >= 0) & (first <= 1)).all()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, single)


def test_the_weights_reach_the_linear_svm_itself_not_only_its_calibration(data):
    """The Platt scaling gets the weights too, so differing probabilities alone would not show
    that the SVM inside the calibration saw them: compare the SVMs' coefficients."""

    def inner_svms(model: Any) -> list[Any]:
        return [c.estimator for c in model["svm"].calibrated_classifiers_]

    weighted = inner_svms(fit("svm", SMALL, data))
    plain = inner_svms(fit("svm", SMALL, data, weighted=False))
    assert len(weighted) == len(plain) == 3
    for w, p in zip(weighted, plain, strict=True):
        assert type(w).__name__ == "LinearSVM"
        assert not np.allclose(w.coef_, p.coef_)


def test_the_exact_svm_gets_the_weights_of_the_rows_it_draws(data):
    X, y, w = data
    model = fit("svm", SUBSAMPLED_SVM, data)
    assert isinstance(model, SubsampledClassifier)
    rows = model.rows_
    assert len(rows) == 400
    assert (np.diff(rows) > 0).all()  # distinct, in time order
    np.testing.assert_array_equal(rows, fit("svm", SUBSAMPLED_SVM, data).rows_)
    assert not np.array_equal(rows, fit("svm", SUBSAMPLED_SVM, data, seed=8).rows_)

    def exact_svm(m: Any) -> Any:
        (calibrated,) = m.estimator_["svm"].calibrated_classifiers_
        return calibrated.estimator

    plain = exact_svm(fit("svm", SUBSAMPLED_SVM, data, weighted=False))
    assert type(exact_svm(model)).__name__ == "SVC"
    assert not np.array_equal(exact_svm(model).dual_coef_, plain.dual_coef_)
    # Weighting the drawn rows by hand gives the same model: the draw kept their weights.
    by_hand = fit_model("logistic_regression", X[rows], y[rows], w[rows], SMALL, n_jobs=1, seed=7)
    via_draw = SubsampledClassifier(
        build_model("logistic_regression", SMALL, n_jobs=1, seed=7), max_samples=400, random_state=7
    ).fit(X, y, w)
    np.testing.assert_array_equal(positive_proba(by_hand, X), positive_proba(via_draw, X))


def test_each_name_builds_the_estimator_the_configuration_describes():
    models = {name: build_model(name, Config().models, n_jobs=2, seed=5) for name in MODEL_NAMES}
    assert type(models["random_forest"]).__name__ == "RandomForestClassifier"
    assert models["random_forest"].get_params()["n_jobs"] == 2
    xgb = models["xgboost"].get_params()
    assert type(models["xgboost"]).__name__ == "XGBClassifier"
    assert (xgb["tree_method"], xgb["n_jobs"], xgb["random_state"]) == ("hist", 2, 5)
    lgbm = models["lightgbm"].get_params()
    assert type(models["lightgbm"]).__name__ == "LGBMClassifier"
    assert (lgbm["verbose"], lgbm["n_jobs"], lgbm["subsample_freq"]) == (-1, 2, 1)
    assert type(models["extra_trees"]).__name__ == "ExtraTreesClassifier"
    boosting = models["gradient_boosting"]
    assert [type(s).__name__ for _, s in boosting.steps] == [
        "QuantileBinner",
        "HistGradientBoostingClassifier",
    ]
    assert boosting["boost"].get_params()["early_stopping"] is False
    for name, last in (("mlp", "MLPClassifier"), ("logistic_regression", "LogisticRegression")):
        assert isinstance(models[name], Pipeline)
        assert [type(s).__name__ for _, s in models[name].steps] == ["StandardScaler", last]
    svm = models["svm"]
    assert [type(s).__name__ for _, s in svm.steps] == [
        "StandardScaler",
        "Nystroem",
        "CalibratedClassifierCV",
    ]
    assert svm["kernel"].get_params()["gamma"] is None  # 1 / n_features
    assert svm["kernel"].get_params()["n_components"] == 300
    tuned = dataclasses.replace(Config().models, svm=SVMConfig(gamma=0.5))
    assert build_model("svm", tuned, n_jobs=1, seed=0)["kernel"].get_params()["gamma"] == 0.5


def test_an_unknown_model_name_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"model 'catboost': unknown base model; expected one"):
        build_model("catboost", SMALL, n_jobs=1, seed=0)
    X, y, _ = np.zeros((4, 2)), np.array([0, 1, 0, 1]), None
    with pytest.raises(ConfigError, match="'catboost'"):
        fit_model("catboost", X, y, None, SMALL, n_jobs=1, seed=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_labels_of_one_class_fail_the_fit_naming_the_model(name, data):
    X, y, w = data
    with pytest.raises(ModelFitError, match=rf"^model {name}: fit failed: .* all \[1\]") as info:
        fit_model(name, X, np.ones_like(y), w, SMALL, n_jobs=1, seed=0)
    assert info.value.model == name
    copy = pickle.loads(pickle.dumps(info.value))  # survives a trip between processes
    assert (str(copy), copy.model) == (str(info.value), name)


def test_a_library_failure_keeps_the_library_message(data):
    X, y, _ = data
    with pytest.raises(
        ModelFitError,
        match=r"^model logistic_regression: fit failed: ValueError: .*inconsistent numbers of "
        r"samples",
    ) as info:
        fit_model("logistic_regression", X[:-1], y, None, SMALL, n_jobs=1, seed=0)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w[:3], r"3 sample weights for \d+ labels"),
        (lambda w: np.where(np.arange(len(w)) == 5, -1.0, w), "sample weights must be finite"),
        (lambda w: np.where(np.arange(len(w)) == 5, np.nan, w), "sample weights must be finite"),
        (lambda w: np.zeros_like(w), "sample weights must be .* with a positive sum"),
    ],
    ids=["short", "negative", "nan", "all-zero"],
)
def test_unusable_weights_fail_the_fit(change, message, data):
    X, y, w = data
    with pytest.raises(ModelFitError, match=rf"^model xgboost: fit failed: {message}"):
        fit_model("xgboost", X, y, change(w), SMALL, n_jobs=1, seed=0)


def test_the_mlp_at_its_epoch_budget_logs_once_and_does_not_warn(data, caplog):
    # pytest turns warnings into errors here: a ConvergenceWarning escaping the fit would fail.
    with caplog.at_level(logging.INFO, logger="daemon.training.fitting"):
        fit("mlp", SMALL, data)
    lines = [r for r in caplog.records if "iteration budget" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "model mlp" in lines[0].getMessage()


def test_non_finite_features_are_replaced_the_same_way_in_fit_and_scoring(data, caplog):
    X, y, w = data
    assert finite_features(X) is X  # real rows: no copy
    dirty = X.copy()
    dirty[10, 3] = np.nan
    dirty[11, 4] = np.inf
    dirty[12, 5] = -3e38
    clean = finite_features(dirty)
    assert clean[10, 3] == 0 and clean[11, 4] == FEATURE_LIMIT and clean[12, 5] == -FEATURE_LIMIT
    with caplog.at_level(logging.WARNING, logger="daemon.registry.ensemble"):
        model = fit_model("logistic_regression", dirty, y, w, SMALL, n_jobs=1, seed=0)
    assert "1 NaN replaced by 0 and 2 values beyond +-1e+06 clipped" in caplog.text
    assert np.isfinite(positive_proba(model, dirty)).all()
    np.testing.assert_array_equal(positive_proba(model, dirty), positive_proba(model, clean))
    assert len(FEATURE_NAMES) == X.shape[1]


def test_positive_proba_is_the_column_of_class_one(data):
    X = data[0]
    model = fit("xgboost", SMALL, data)
    np.testing.assert_allclose(positive_proba(model, X), model.predict_proba(X)[:, 1])
    assert positive_proba(model, X).dtype == np.float64

    class OtherLabels:
        classes_ = np.array([0, 2])

    with pytest.raises(
        ValueError, match=r"OtherLabels was fitted without class 1 \(classes \[0, 2\]\)"
    ):
        positive_proba(OtherLabels(), X)
