"""The eight base models of the ensemble, built from `ModelsConfig` (`build_model`), and the
estimators of regimed's own that some of them are made of (`SubsampledClassifier`, `LinearSVM`,
`QuantileBinner`; their class paths are recorded in the skops files of registered models, see
`daemon.registry.bundle.SKOPS_TRUSTED_TYPES`).

Every model is a scikit-learn-style classifier, so the trainer, the scorer and the artifact code
treat them alike: `build_model` makes one unfitted, `fit_model` (daemon.training.fitting) fits
it, `positive_proba` (daemon.registry.ensemble) reads P(label = 1) from any of them.
docs/benchmarks.md, "Retrain: base models", has the fit times at the default configuration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from daemon.config.training import MODEL_NAMES, ModelsConfig
from daemon.errors import ConfigError
from daemon.registry.ensemble import FloatArray, Model
from daemon.training.custom import build_custom

#: Folds of the Platt scaling that gives the SVMs their probabilities.
SVM_CALIBRATION_FOLDS = 3
#: Passes of `LinearSVM` over the rows.
SVM_EPOCHS = 10


def build_model(name: str, config: ModelsConfig, *, n_jobs: int, seed: int) -> Model:
    """An unfitted estimator for `name` (one of `MODEL_NAMES`) with the hyper-parameters of
    `config`, using at most `n_jobs` threads and seeded with `seed`.

    A custom model (`config.custom`, docs/models.md) is whatever its factory returns, called
    with its table's keys only (`n_jobs` and `seed` are the factory's own business).

    Raises `ConfigError` naming the model when `name` is neither one of `MODEL_NAMES` nor a
    custom model, or its factory or estimator is refused (daemon.training.custom).
    """
    spec = _SPECS.get(name)
    if spec is not None:
        return spec.make(name, config, n_jobs, seed)
    custom = config.custom_model(name)
    if custom is None:
        raise ConfigError(
            f"model {name!r}: unknown base model; expected one of {', '.join(MODEL_NAMES)} "
            "or a custom model ([models.NAME] with a factory)"
        )
    model: Model = build_custom(custom)
    return model


def weight_kwargs(model: Model, weights: FloatArray | None) -> dict[str, FloatArray]:
    """The keyword that hands `weights` to the learning step of `model`'s `fit`: the last step of
    a pipeline (the scalers and the kernel map have nothing to weigh), else the model itself."""
    if weights is None:
        return {}
    if isinstance(model, Pipeline):
        return {f"{model.steps[-1][0]}__sample_weight": weights}
    return {"sample_weight": weights}


class SubsampledClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """`estimator` fitted on at most `max_samples` rows drawn without replacement under
    `random_state` (kept in time order, with their weights).

    For a model whose fit grows with the square of the rows (an exact kernel SVM): a fixed cost
    however long the history gets.
    """

    def __init__(self, estimator: Model, max_samples: int, random_state: int = 0) -> None:
        self.estimator = estimator
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(
        self,
        X: FloatArray,
        y: npt.NDArray[Any],
        sample_weight: FloatArray | None = None,
    ) -> SubsampledClassifier:
        """Fit a clone of `estimator` on the drawn rows; `rows_` holds their indices."""
        x, labels = np.asarray(X), np.asarray(y)
        n = len(labels)
        if len(x) != n:
            raise ValueError(
                f"Found input variables with inconsistent numbers of samples: [{len(x)}, {n}]"
            )
        if n > self.max_samples:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(n, size=self.max_samples, replace=False))
        else:
            rows = np.arange(n)
        fitted = clone(self.estimator)
        w = None if sample_weight is None else np.asarray(sample_weight)[rows]
        fitted.fit(x[rows], labels[rows], **weight_kwargs(fitted, w))
        self.estimator_ = fitted
        self.rows_ = rows
        self.classes_ = fitted.classes_
        return self

    def predict_proba(self, X: FloatArray) -> FloatArray:
        """Class probabilities from the fitted estimator, columns in `classes_` order."""
        return np.asarray(self.estimator_.predict_proba(X))

    def predict(self, X: FloatArray) -> npt.NDArray[Any]:
        """The most probable class of each row."""
        best = np.argmax(self.predict_proba(X), axis=1)
        labels: npt.NDArray[Any] = np.asarray(self.classes_)[best]
        return labels


class LinearSVM(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A linear SVM, hinge loss with penalty `C` as in `LinearSVC`, trained by averaged
    stochastic gradient descent: `epochs` passes over the rows in an order drawn from
    `random_state`.

    Why not `LinearSVC`: liblinear copies dense rows into its sparse format and took 15 s for
    one fit on 67,000 rows x 300 kernel features, 45 s for the three calibration folds. Ten
    averaged passes take about a second and gave the same label as liblinear's solution to 95%
    of the holdout rows (docs/benchmarks.md, "Retrain: base models").
    """

    def __init__(self, C: float = 1.0, epochs: int = SVM_EPOCHS, random_state: int = 0) -> None:
        self.C = C
        self.epochs = epochs
        self.random_state = random_state

    def fit(
        self, X: FloatArray, y: npt.NDArray[Any], sample_weight: FloatArray | None = None
    ) -> LinearSVM:
        """Fit on `X`, `y`; each row's hinge loss counts `sample_weight` times."""
        # LinearSVC minimises |w|^2 / 2 + C * sum(loss); SGD minimises alpha |w|^2 / 2 +
        # mean(loss): the same problem when alpha = 1 / (C * n).
        sgd = SGDClassifier(
            loss="hinge",
            alpha=1.0 / (self.C * len(y)),
            average=True,
            max_iter=self.epochs,
            tol=None,
            random_state=self.random_state,
        )
        sgd.fit(X, y, sample_weight=sample_weight)
        # Keep the hyperplane only: a smaller artifact with no solver state to unpickle.
        self.coef_ = np.asarray(sgd.coef_, dtype=np.float64).reshape(-1)
        self.intercept_ = float(sgd.intercept_[0])
        self.classes_ = sgd.classes_
        return self

    def decision_function(self, X: FloatArray) -> npt.NDArray[np.float64]:
        """Signed distance of each row to the separating hyperplane (> 0: `classes_[1]`)."""
        scores: npt.NDArray[np.float64] = np.asarray(X, dtype=np.float64) @ self.coef_
        return scores + self.intercept_

    def predict(self, X: FloatArray) -> npt.NDArray[Any]:
        """The class on each row's side of the hyperplane."""
        labels: npt.NDArray[Any] = np.asarray(self.classes_)[
            (self.decision_function(X) > 0).astype(np.intp)
        ]
        return labels


class QuantileBinner(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Each feature replaced by the number of its bin: at most `n_bins` bins per feature, cut
    at the feature's unweighted quantiles, or one bin per distinct value when there are fewer.

    Placed before `HistGradientBoostingClassifier`, which then sees at most 255 distinct values
    per feature and keeps exactly these bins. Why: given sample weights, scikit-learn 1.9 cuts
    its bins at weighted quantiles, one `_weighted_percentile` call per edge and feature, which
    took 1.9 s a feature on 100,000 rows, over a minute for the 47 (scikit-learn issue 34304).
    Unweighted bin edges are what LightGBM uses too; the weights still count in every split.
    """

    def __init__(self, n_bins: int = 255) -> None:
        self.n_bins = n_bins

    def fit(self, X: FloatArray, y: object = None) -> QuantileBinner:
        """Find each feature's bin thresholds (`thresholds_`, one array per feature)."""
        x = np.asarray(X)
        levels = np.arange(1, self.n_bins) / self.n_bins
        thresholds = []
        for column in x.T.astype(np.float64):
            distinct = np.unique(column)
            if len(distinct) <= self.n_bins:
                cuts = (distinct[:-1] + distinct[1:]) / 2
            else:
                cuts = np.unique(np.quantile(column, levels, method="averaged_inverted_cdf"))
            thresholds.append(cuts)
        self.thresholds_ = thresholds
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, X: FloatArray) -> npt.NDArray[np.float32]:
        """The bin of every value as float32: bin i holds the values above threshold i - 1 and
        at most threshold i, as in the boosting's own binning."""
        x = np.asarray(X)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {x.shape}; expected {self.n_features_in_} columns")
        out = np.empty(x.shape, dtype=np.float32)
        for j, cuts in enumerate(self.thresholds_):
            out[:, j] = np.searchsorted(cuts, x[:, j], side="left")
        return out


# -- the model table ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """How one base model is built from its section of `ModelsConfig` (`config.<name>`):
    `estimator` (a class, or "module:Class" for a heavy library imported on use) with `params`
    (keyword -> the section's field, or a function of the section), `fixed` keywords,
    `random_state=seed` and (`threads`) `n_jobs`; with `before`, as the step named `step` of a
    pipeline after those steps. `build` replaces all this for the SVM, whose structure depends
    on its section."""

    estimator: type | str
    params: Mapping[str, str | Callable[[Any], Any]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    threads: bool = True
    before: tuple[tuple[str, type], ...] = ()
    step: str = ""
    build: Callable[[ModelsConfig, int, int], Model] | None = None

    def make(self, name: str, config: ModelsConfig, n_jobs: int, seed: int) -> Model:
        """The unfitted model `name` under `config`."""
        if self.build is not None:
            return self.build(config, n_jobs, seed)
        section = getattr(config, name)
        kwargs = {
            key: getattr(section, value) if isinstance(value, str) else value(section)
            for key, value in self.params.items()
        }
        kwargs.update(self.fixed)
        if self.threads:
            kwargs["n_jobs"] = n_jobs
        cls: Any = self.estimator
        if isinstance(cls, str):
            module, _, name = cls.partition(":")
            cls = getattr(importlib.import_module(module), name)
        estimator = cls(**kwargs, random_state=seed)
        if not self.before:
            return estimator
        return Pipeline([*((n, step()) for n, step in self.before), (self.step, estimator)])


def _same(*fields: str) -> dict[str, str]:
    """Estimator keywords named like the section's fields."""
    return {f: f for f in fields}


def _svm(config: ModelsConfig, n_jobs: int, seed: int) -> Model:
    """An RBF-kernel SVM with Platt-scaled probabilities, in one of two fast forms.

    `nystroem`: the RBF kernel approximated by `n_components` kernel features (Nystroem), then
    a linear SVM in that space (`LinearSVM`, linear in the rows), calibrated with
    `SVM_CALIBRATION_FOLDS`-fold sigmoid (Platt) scaling. `subsample`: an exact RBF `SVC` on at
    most `max_samples` rows; its probabilities come from the same Platt scaling through
    `CalibratedClassifierCV` rather than `SVC(probability=True)`, which scikit-learn deprecates
    from 1.9 on. Inputs are standardized, so gamma 0 (1 / n_features) suits every feature.
    """
    c = config.svm
    scale = ("scale", StandardScaler())
    if c.method == "nystroem":
        kernel = Nystroem(
            kernel="rbf",
            gamma=c.gamma or None,  # None: 1 / n_features
            n_components=c.n_components,
            random_state=seed,
        )
        linear = LinearSVM(C=c.c, random_state=seed)
        calibrated = CalibratedClassifierCV(linear, method="sigmoid", cv=SVM_CALIBRATION_FOLDS)
        return Pipeline([scale, ("kernel", kernel), ("svm", calibrated)])
    exact = SVC(C=c.c, kernel="rbf", gamma=c.gamma or "auto", random_state=seed)
    calibrated = CalibratedClassifierCV(
        exact, method="sigmoid", cv=SVM_CALIBRATION_FOLDS, ensemble=False
    )
    return SubsampledClassifier(
        Pipeline([scale, ("svm", calibrated)]), max_samples=c.max_samples, random_state=seed
    )


_TREE = _same("n_estimators", "max_depth", "min_samples_leaf", "max_features")
_BOOSTED = _same("n_estimators", "learning_rate", "subsample", "colsample_bytree")

#: The eight base models. The gradient boosting is scikit-learn's histogram variant, not the
#: exact `GradientBoostingClassifier`: that one sorts every feature at every split on one core
#: and took 9 minutes on 85,000 rows, several times the whole retrain budget; the histogram
#: variant buckets each feature once (at most 255 bins; `QuantileBinner` cuts them, see there
#: why) and grows each tree from bucket sums on every thread. Its early stopping is off: it
#: would hold out a random 10% of the rows past 10,000, a look-ahead split on serially
#: correlated samples. LightGBM draws rows only when the bagging frequency is set, so
#: `subsample_freq` follows `subsample`; it runs `deterministic` with a fixed histogram layout
#: (`force_col_wise`) rather than one chosen by a timing test, which could differ between runs.
_SPECS: dict[str, _Spec] = {
    "random_forest": _Spec(RandomForestClassifier, {**_TREE, **_same("max_samples")}),
    "xgboost": _Spec(
        "xgboost:XGBClassifier",
        {**_BOOSTED, **_same("max_depth", "min_child_weight")},
        fixed={"objective": "binary:logistic", "tree_method": "hist"},
    ),
    "lightgbm": _Spec(
        "lightgbm:LGBMClassifier",
        {
            **_BOOSTED,
            **_same("num_leaves", "min_child_samples"),
            "subsample_freq": lambda c: 1 if c.subsample < 1 else 0,
        },
        fixed={"deterministic": True, "force_col_wise": True, "verbose": -1},
    ),
    "extra_trees": _Spec(ExtraTreesClassifier, _TREE),
    "gradient_boosting": _Spec(
        HistGradientBoostingClassifier,
        _same("max_iter", "max_leaf_nodes", "learning_rate", "min_samples_leaf")
        | _same("l2_regularization"),
        fixed={"early_stopping": False},
        threads=False,
        before=(("bin", QuantileBinner),),
        step="boost",
    ),
    "mlp": _Spec(
        MLPClassifier,
        _same("hidden_layer_sizes", "alpha", "learning_rate_init", "batch_size", "max_iter"),
        threads=False,
        before=(("scale", StandardScaler),),
        step="mlp",
    ),
    "logistic_regression": _Spec(
        LogisticRegression,
        {"C": "c", "max_iter": "max_iter"},
        threads=False,
        before=(("scale", StandardScaler),),
        step="logistic",
    ),
    "svm": _Spec(SVC, build=_svm),
}
