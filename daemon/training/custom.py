"""Models of the user's own (docs/models.md): a `[models.NAME]` table names a factory
("package.module:callable") that returns an unfitted estimator.

`check_custom_models` imports each factory of `training.models`, builds its estimator and checks
that it can take part in a retrain: it has `predict_proba` and its `fit` takes `sample_weight`
(or, for a scikit-learn `Pipeline`, its last step's `fit` does). `regimed check-config` runs it,
and so does every retrain before it fits anything, so a model that cannot work is refused with
its name and the reason rather than after the other models were fitted. `build_custom` is the
one place that calls a factory.

The factory's module must be importable where the retrain and the daemon run (the daemon's
virtualenv): the retrain child process imports it to build the model, the daemon to load the
model's artifact.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from daemon.config import Config
from daemon.config.training import CustomModelConfig
from daemon.errors import ConfigError

__all__ = ["build_custom", "check_custom_models"]


def check_custom_models(config: Config) -> None:
    """Refuse, with ConfigError naming the model and the reason, any custom model named in
    `training.models` whose factory cannot be imported or called, or whose estimator lacks
    `predict_proba` or a `fit` taking `sample_weight`. Nothing is fitted."""
    for name in config.training.models:
        spec = config.models.custom_model(name)
        if spec is not None:
            build_custom(spec)


def build_custom(spec: CustomModelConfig) -> Any:
    """The unfitted estimator of the custom model `spec`, checked as `check_custom_models`
    says; ConfigError naming `models.<name>` and the reason otherwise."""
    factory = _factory(spec)
    where = f"models.{spec.name}"
    try:
        estimator = factory(**spec.kwargs)
    except Exception as exc:  # the user's code: any failure is reported with its message
        raise ConfigError(
            f"{where}: {spec.factory}({_call_args(spec)}) failed: {type(exc).__name__}: {exc}"
        ) from None
    what = f"{where}: the estimator {type(estimator).__name__} from {spec.factory}"
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ConfigError(
            f"{what} has no predict_proba; regimed votes with the probability of label 1"
        )
    learner = _learner(estimator)
    fit = getattr(learner, "fit", None)
    if not callable(fit):
        raise ConfigError(f"{what} has no fit method")
    if not _takes_sample_weight(fit):
        raise ConfigError(
            f"{what}: its fit takes no sample_weight; regimed weighs every training row "
            "by its regime (weights.regime), so fit(X, y, sample_weight=...) is required"
        )
    return estimator


def _factory(spec: CustomModelConfig) -> Callable[..., Any]:
    """The callable `spec.factory` names, imported; ConfigError saying why not."""
    where = f"models.{spec.name}.factory = {spec.factory!r}"
    module_name, _, attribute = spec.factory.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises on import
        raise ConfigError(
            f"{where}: cannot import {module_name}: {type(exc).__name__}: {exc} (the module "
            "must be importable in the daemon's Python environment)"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{where}: {module_name} has no attribute {attribute}") from None
    if not callable(target):
        raise ConfigError(f"{where}: {attribute} is not callable")
    return target  # type: ignore[no-any-return]


def _learner(estimator: Any) -> Any:
    """The step whose fit gets the weights: a pipeline's last step, else the estimator."""
    steps = getattr(estimator, "steps", None)
    if type(estimator).__name__ == "Pipeline" and isinstance(steps, list) and steps:
        return steps[-1][1]
    return estimator


def _takes_sample_weight(fit: Callable[..., Any]) -> bool:
    """Whether `fit` has a parameter named `sample_weight` (a bare **kwargs does not count: it
    may drop the weights without a word)."""
    try:
        parameters = inspect.signature(fit).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return "sample_weight" in parameters


def _call_args(spec: CustomModelConfig) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in spec.params)
