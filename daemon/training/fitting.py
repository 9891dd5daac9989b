"""Fitting the base models: `fit_model` builds one (daemon.training.models), routes the sample
weights to whichever step learns from them, logs the warnings a library gives on expected use,
and raises every failure as `ModelFitError` naming the model; `fit_all` fits every model of
`training.models` in turn, leaving out an optional model that fails.

A model fitted twice on the same data with the same seed gives the same probabilities bit for
bit, on one thread or two (tests/training/test_models.py; checked once on 100,000 rows too).
`fit_model`, like scoring, replaces NaN in its rows with 0 and clips every value to
+-`FEATURE_LIMIT` (`finite_features`; daemon.registry.ensemble says why).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_approximation import Nystroem
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from daemon.config import Config
from daemon.config.training import ModelsConfig
from daemon.errors import ModelFitError, RegimedError
from daemon.registry.ensemble import FloatArray, Model, finite_features
from daemon.training.models import build_model, weight_kwargs
from daemon.training.threads import resolve_n_jobs

if TYPE_CHECKING:
    from daemon.training.cluster import Cluster

__all__ = ["FitResult", "fit_all", "fit_model", "prepared"]

#: `fit_all`'s answer: the fitted models, each one's fit seconds, the optional models that
#: failed and why.
FitResult = tuple[dict[str, Any], dict[str, float], dict[str, str]]

logger = logging.getLogger(__name__)


def fit_model(
    name: str,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None,
    config: ModelsConfig,
    *,
    n_jobs: int,
    seed: int,
) -> Model:
    """`build_model(name, ...)` fitted on the rows `X` (n x features), 0/1 labels `y` and loss
    weights `sample_weight` (None: every row counts once).

    The weights reach the step that learns from them in every model (the classifier after a
    scaler; the SVM and its Platt scaling). Deterministic: the same data and seed give the same
    model. Raises `ModelFitError` naming the model when the labels hold one class only, the
    weights are unusable or the library fails (its message is kept).
    """
    model = build_model(name, config, n_jobs=n_jobs, seed=seed)
    x, labels, weights = prepared(name, X, y, sample_weight)
    _fit_to_size(model, len(labels))
    started = time.perf_counter()
    try:
        with _threads(n_jobs), _convergence_logged(name):
            model.fit(x, labels, **weight_kwargs(model, weights))
    except Exception as exc:  # any library failure: the trainer decides what a failure means
        raise ModelFitError(name, f"{type(exc).__name__}: {exc}") from exc
    if isinstance(model, RandomForestClassifier | ExtraTreesClassifier):
        # A forest predicting on several threads adds up its trees' probabilities in the order
        # the threads finish, which changes the last bit; scoring runs on one thread anyway.
        model.set_params(n_jobs=1)
    logger.debug("model %s: fitted %d rows in %.2f s", name, len(labels), _since(started))
    return model


def prepared(
    name: str, X: npt.ArrayLike, y: npt.ArrayLike, sample_weight: npt.ArrayLike | None
) -> tuple[FloatArray, npt.NDArray[np.int8], FloatArray | None]:
    """The rows, labels and weights `fit_model` hands the library: NaN to 0 and values clipped
    (`finite_features`), labels as int8 and weights as float64, checked; `ModelFitError` naming
    the model when they are unusable. The fits spread over a cluster
    (daemon.training.spread) prepare their rows with it too."""
    x = finite_features(X, what=f"model {name}: training rows")
    labels, weights = _checked_targets(name, y, sample_weight)
    return x, labels, weights


def _checked_targets(
    name: str, y: npt.ArrayLike, sample_weight: npt.ArrayLike | None
) -> tuple[npt.NDArray[np.int8], FloatArray | None]:
    """Labels as int8 and weights as float64, or `ModelFitError` saying what is wrong with them.

    Checked here rather than left to the libraries because they disagree: a forest fits one
    class without complaint and then has no probability of class 1 to give.
    """
    labels = np.asarray(y).reshape(-1)
    classes = set(np.unique(labels).tolist())
    if not classes <= {0, 1}:
        raise ModelFitError(name, f"labels must be 0 or 1, got {sorted(classes)[:5]}")
    if classes != {0, 1}:
        raise ModelFitError(
            name,
            f"the {len(labels)} training labels are all {sorted(classes) or 'absent'}; "
            "a classifier needs both 0 and 1",
        )
    if sample_weight is None:
        return labels.astype(np.int8), None
    weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if len(weights) != len(labels):
        raise ModelFitError(name, f"{len(weights)} sample weights for {len(labels)} labels")
    if not (np.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
        raise ModelFitError(name, "sample weights must be finite and >= 0 with a positive sum")
    return labels.astype(np.int8), weights


def _fit_to_size(model: Model, n_rows: int) -> None:
    """Shrink sizes that cannot exceed the row count (MLP minibatch, Nystroem components), so a
    small training set gets no warning about them."""
    steps = dict(model.steps) if isinstance(model, Pipeline) else {}
    mlp, kernel = steps.get("mlp"), steps.get("kernel")
    if isinstance(mlp, MLPClassifier) and mlp.batch_size > n_rows:
        mlp.set_params(batch_size=n_rows)
    if isinstance(kernel, Nystroem) and kernel.n_components > n_rows:
        kernel.set_params(n_components=n_rows)


@contextmanager
def _threads(n_jobs: int) -> Iterator[None]:
    """At most `n_jobs` OpenMP threads (the histogram boosting has no `n_jobs` of its own) and
    one BLAS thread.

    BLAS works on small matrices here (a 1,024-row minibatch times 64 units in the MLP): a
    second thread bought nothing on a quiet machine (MLP 8.3 s with two, 7.0 s with one) and,
    spin-waiting for a core that the consumer or another process held, made the MLP ten times
    slower on a busy one (docs/benchmarks.md). One thread also keeps the MLP's sums in one
    order whatever `n_jobs` is, so its result does not depend on it.
    """
    with threadpool_limits(limits=n_jobs, user_api="openmp"), threadpool_limits(1, "blas"):
        yield


@contextmanager
def _convergence_logged(name: str) -> Iterator[None]:
    """Turn the `ConvergenceWarning`s of one fit into one info line; pass other warnings on.

    A model that stops at its iteration budget (the MLP at `max_iter` epochs) is expected use,
    not a fault. `catch_warnings` is process-wide: a warning that another thread raises
    meanwhile is passed on after the fit.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield
    converge = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    if converge:
        logger.info(
            "model %s: stopped at its iteration budget before converging (%s)",
            name,
            str(converge[0].message).splitlines()[0],
        )
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _since(started: float) -> float:
    return time.perf_counter() - started


def fit_all(
    config: Config,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    w: npt.NDArray[np.float64] | None,
    progress: Callable[[str, Mapping[str, Any]], None],
    *,
    names: Sequence[str] | None = None,
    optional: Sequence[str] | None = None,
    cluster: Cluster | None = None,
    stage: str = "fit",
) -> FitResult:
    """Fit every model of `names` (default `training.models`) in turn: (the fitted models,
    each one's fit seconds, the optional models that failed and why). `progress` hears
    "model_started" and "model_finished" for each. A required model that fails raises its
    `ModelFitError`; an optional one (`optional`, default `training.optional_models`) is
    logged and left out; none fitted at all raises `RegimedError`.

    With a `cluster` (daemon.training.cluster) that has a client, the models fit there, each
    a task, recorded in its placement under `stage` ("fit", "refit")."""
    cfg = config.training
    names = cfg.models if names is None else tuple(names)
    optional = cfg.optional_models if optional is None else tuple(optional)
    if cluster is not None and cluster.client is not None:
        return cluster.fit_all(
            config, X, y, w, progress, stage=stage, names=names, optional=optional
        )
    n_jobs = resolve_n_jobs(cfg.n_jobs)  # the daemon's retrain process gets a number
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for i, name in enumerate(names):
        progress("model_started", {"model": name, "index": i, "total": len(names)})
        t = time.perf_counter()
        try:
            models[name] = fit_model(name, X, y, w, config.models, n_jobs=n_jobs, seed=cfg.seed)
        except ModelFitError as exc:
            if name not in optional:
                raise
            logger.warning("optional model %s failed to fit: %s", name, exc)
            failed[name] = str(exc)
        seconds[name] = round(time.perf_counter() - t, 3)
        progress(
            "model_finished",
            {"model": name, "index": i, "total": len(names), "seconds": seconds[name]},
        )
    if not models:
        raise RegimedError("no model could be fitted")
    return models, seconds, failed
