"""Configuration of the trainer: the split, the eight base models and the promotion gate.

Kept apart from `daemon.config` (which imports it into `Config`) so each module stays small.
Defaults are chosen to fit a 100,000-sample retrain in under two minutes on two cores
(docs/benchmarks.md, "Retrain") while staying sound: trees are depth-limited, boosted models use
a small learning rate, the scale-sensitive models get standardized inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.config.settings import bounded, show
from daemon.errors import ConfigError

#: The eight base models, in the order reports list them.
MODEL_NAMES: tuple[str, ...] = (
    "random_forest",
    "xgboost",
    "lightgbm",
    "extra_trees",
    "gradient_boosting",
    "mlp",
    "logistic_regression",
    "svm",
)

#: A custom model's name: it becomes a file name in the model bundle and a report key.
_CUSTOM_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
#: "package.module:callable" (the callable may be an attribute path, e.g. "mod:Class.create").
_FACTORY = re.compile(f"{_DOTTED}:{_DOTTED}")
#: "module.Type", as skops names the types a file holds.
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
#: A Dask scheduler address: tcp://host:port (a host name, IPv4 or [IPv6] address).
_DASK_ADDRESS = re.compile(r"tcp://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")

GateMetric = Literal["balanced_accuracy", "accuracy"]


@dataclass(frozen=True)
class TrainingConfig:
    """How a retrain splits, which models it fits and how many threads they may use."""

    validation_fraction: float = bounded(0.2, gt=0, lt=1)
    min_validation_samples: int = bounded(200, ge=1)
    min_score_samples: int = bounded(50, ge=1)
    ensemble_holdout_fraction: float = bounded(0.2, gt=0, lt=1)
    models: tuple[str, ...] = MODEL_NAMES
    optional_models: tuple[str, ...] = ()
    #: Threads per model fit; "auto": the cores the daemon's consumer and writer leave (at least
    #: one) in the daemon's retrain process, every core in `regimed retrain`.
    n_jobs: int | Literal["auto"] = bounded("auto", ge=1, le=256)
    seed: int = bounded(42, ge=0)
    lock_timeout_seconds: float = bounded(0.0, ge=0)
    #: After the gate promotes a candidate, refit its members on every labelled row (the
    #: validated members are kept beside them for the gate); False serves them as validated.
    refit: bool = True
    #: The Dask scheduler the retrain fits its models on ("tcp://host:port"); empty: this
    #: machine (docs/training.md, "On a Dask cluster").
    dask_scheduler: str = ""
    #: When the scheduler cannot be reached, fit on this machine instead of failing the run.
    dask_fallback_local: bool = False

    def __post_init__(self) -> None:
        check_dask_address(self.dask_scheduler)
        for key, names in (("models", self.models), ("optional_models", self.optional_models)):
            for i, name in enumerate(names):
                # A name outside MODEL_NAMES must be a [models.NAME] table with a factory; the
                # loader checks that once both sections are built (`check_model_names`).
                if name not in MODEL_NAMES and not _CUSTOM_NAME.fullmatch(name):
                    raise ConfigError(
                        f"training.{key}[{i}] = {show(name)}: expected one of "
                        f"{', '.join(MODEL_NAMES)} or the name of a [models.NAME] table"
                    )
                if name in names[:i]:
                    raise ConfigError(f"training.{key}[{i}] = {show(name)}: listed twice")
        if not self.models:
            raise ConfigError("training.models = []: expected at least one model")
        if all(m in self.optional_models for m in self.models):
            raise ConfigError(
                "training.optional_models: every model in training.models is optional; "
                "expected at least one required model"
            )


def check_dask_address(address: str) -> None:
    """`ConfigError` naming `training.dask_scheduler` unless it is empty or tcp://host:port."""
    match = _DASK_ADDRESS.fullmatch(address)
    if address and (match is None or not 0 < int(match.group(1)) < 65536):
        raise ConfigError(
            f"training.dask_scheduler = {show(address)}: expected tcp://host:port "
            "(port 1-65535), or empty to fit on this machine"
        )


@dataclass(frozen=True)
class GateConfig:
    """When a candidate shows skill and replaces the champion (docs/training.md, "The gate").

    `max_regime_drop` is kept so configurations naming it load; it no longer decides alone: a
    regime vetoes when its own bootstrap interval shows a drop, and `max_regime_drop` (0 by
    default) is only a floor under that drop's point estimate.
    """

    metric: GateMetric = "balanced_accuracy"
    tolerance: float = bounded(0.005, ge=0, le=1)
    max_regime_drop: float = bounded(0.0, ge=0, le=1)
    min_edge: float = bounded(0.0, ge=-1, le=1)
    min_regime_rows: int = bounded(200, ge=1)
    bootstrap_samples: int = bounded(1000, ge=0)
    bootstrap_block_days: int = bounded(5, ge=1)


@dataclass(frozen=True)
class RandomForestConfig:
    n_estimators: int = bounded(100, ge=1)
    max_depth: int = bounded(10, ge=1)
    min_samples_leaf: int = bounded(20, ge=1)
    max_features: float = bounded(0.3, gt=0, le=1)
    max_samples: float = bounded(0.2, gt=0, le=1)


@dataclass(frozen=True)
class ExtraTreesConfig:
    n_estimators: int = bounded(100, ge=1)
    max_depth: int = bounded(10, ge=1)
    min_samples_leaf: int = bounded(20, ge=1)
    max_features: float = bounded(0.3, gt=0, le=1)


@dataclass(frozen=True)
class XGBoostConfig:
    n_estimators: int = bounded(200, ge=1)
    max_depth: int = bounded(4, ge=1)
    learning_rate: float = bounded(0.05, gt=0, le=1)
    subsample: float = bounded(0.8, gt=0, le=1)
    colsample_bytree: float = bounded(0.8, gt=0, le=1)
    min_child_weight: float = bounded(5.0, ge=0)


@dataclass(frozen=True)
class LightGBMConfig:
    n_estimators: int = bounded(200, ge=1)
    num_leaves: int = bounded(15, ge=2)
    learning_rate: float = bounded(0.05, gt=0, le=1)
    subsample: float = bounded(0.8, gt=0, le=1)
    colsample_bytree: float = bounded(0.8, gt=0, le=1)
    min_child_samples: int = bounded(50, ge=1)


@dataclass(frozen=True)
class GradientBoostingConfig:
    max_iter: int = bounded(200, ge=1)
    max_leaf_nodes: int = bounded(15, ge=2)
    learning_rate: float = bounded(0.05, gt=0, le=1)
    min_samples_leaf: int = bounded(50, ge=1)
    l2_regularization: float = bounded(1.0, ge=0)


@dataclass(frozen=True)
class MLPConfig:
    hidden_layer_sizes: tuple[int, ...] = (64, 32)
    alpha: float = bounded(1e-3, ge=0)
    learning_rate_init: float = bounded(1e-3, gt=0)
    batch_size: int = bounded(1024, ge=1)
    max_iter: int = bounded(30, ge=1)

    def __post_init__(self) -> None:
        if not self.hidden_layer_sizes or any(n < 1 for n in self.hidden_layer_sizes):
            raise ConfigError(
                f"models.mlp.hidden_layer_sizes = {show(self.hidden_layer_sizes)}: expected "
                "one or more layer sizes >= 1"
            )


@dataclass(frozen=True)
class LogisticRegressionConfig:
    c: float = bounded(1.0, gt=0)
    max_iter: int = bounded(1000, ge=1)


@dataclass(frozen=True)
class SVMConfig:
    """An RBF-kernel SVM made fast: `nystroem` maps the inputs onto `n_components` kernel
    features and fits a linear SVM there; `subsample` fits an exact RBF SVC on at most
    `max_samples` rows. Probabilities come from Platt scaling in both cases."""

    method: Literal["nystroem", "subsample"] = "nystroem"
    n_components: int = bounded(300, ge=1)
    max_samples: int = bounded(5000, ge=10)
    c: float = bounded(1.0, gt=0)
    gamma: float = bounded(0.0, ge=0)


@dataclass(frozen=True)
class CustomModelConfig:
    """A model of the user's own (docs/models.md): a `[models.NAME]` table whose `factory`
    ("package.module:callable") is called with the table's other keys (`params`) and returns
    an unfitted estimator with `fit(X, y, sample_weight=...)` and `predict_proba`; `trusted`
    lists the types ("module.Type") its skops artifact may hold beyond the project's own set.

    Checked here for shape only; importing the factory and checking the estimator it builds is
    `daemon.training.custom.check_custom_models`, run by `regimed check-config` and by every
    retrain before it fits anything.
    """

    name: str
    factory: str
    trusted: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        where = f"models.{self.name}"
        if not _CUSTOM_NAME.fullmatch(self.name) or self.name in MODEL_NAMES:
            raise ConfigError(
                f"[{where}]: a custom model's name must be 1-63 lowercase letters, digits or "
                "'_', starting with a letter, and not a built-in model's"
            )
        if not _FACTORY.fullmatch(self.factory):
            raise ConfigError(
                f"{where}.factory = {show(self.factory)}: expected \"package.module:callable\""
            )
        for i, name in enumerate(self.trusted):
            if not _TYPE.fullmatch(name):
                raise ConfigError(
                    f"{where}.trusted[{i}] = {show(name)}: expected a dotted type name such as "
                    '"mypackage.models.MyClassifier"'
                )

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the factory is called with."""
        return dict(self.params)

    def toml(self, path: str) -> str:
        """This model as the `[models.NAME]` table it came from."""
        lines = [f"[{path}.{self.name}]", f"factory = {show(self.factory)}"]
        lines.append(f"trusted = {show(self.trusted)}")
        lines.extend(f"{key} = {_exact(value)}" for key, value in self.params)
        return "\n".join(lines) + "\n"

    def table(self) -> dict[str, Any]:
        """This model as the TOML table `from_table` reads (arrays as tuples)."""
        return {"factory": self.factory, "trusted": self.trusted, **self.kwargs}

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> CustomModelConfig:
        """The model of the TOML table `[models.<name>]`."""
        factory = table.get("factory")
        if not isinstance(factory, str):
            raise ConfigError(
                f"models.{name}.factory = {show(factory)}: expected \"package.module:callable\""
            )
        trusted = table.get("trusted", [])
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            raise ConfigError(
                f"models.{name}.trusted = {show(trusted)}: expected a list of type names"
            )
        params = tuple(
            (key, _frozen(value))
            for key, value in table.items()
            if key not in ("factory", "trusted")
        )
        return cls(name, factory, tuple(trusted), params)


def _exact(value: Any) -> str:
    """A factory argument as TOML that reads back as the same type (2.0 stays a float)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_exact(v) for v in value) + "]"
    return show(value)


def _frozen(value: Any) -> Any:
    """A TOML value with its arrays as tuples, so the configuration stays immutable."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelsConfig:
    """Hyper-parameters of each base model (`svm.gamma` 0 means 1 / n_features), and the
    custom models (`[models.NAME]` tables with a `factory`, in file order)."""

    random_forest: RandomForestConfig = field(default_factory=RandomForestConfig)
    xgboost: XGBoostConfig = field(default_factory=XGBoostConfig)
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)
    extra_trees: ExtraTreesConfig = field(default_factory=ExtraTreesConfig)
    gradient_boosting: GradientBoostingConfig = field(default_factory=GradientBoostingConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    logistic_regression: LogisticRegressionConfig = field(default_factory=LogisticRegressionConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    custom: tuple[CustomModelConfig, ...] = field(default=(), metadata={"named_tables": True})

    def custom_model(self, name: str) -> CustomModelConfig | None:
        """The custom model called `name`, or None."""
        return next((m for m in self.custom if m.name == name), None)

    def trusted_types(self) -> dict[str, tuple[str, ...]]:
        """Each custom model's `trusted` list by model name."""
        return {m.name: m.trusted for m in self.custom}


def split_custom_models(
    data: Mapping[str, Any],
) -> tuple[dict[str, Any], tuple[CustomModelConfig, ...]]:
    """The `[models]` table of a configuration file without its custom models, and those
    models: every sub-table that is not a built-in model's and has a `factory` key. A table
    without `factory` is left in place, so the loader reports it as an unknown key."""
    builtin = {f for f in ModelsConfig.__dataclass_fields__ if f != "custom"}
    rest: dict[str, Any] = {}
    custom: list[CustomModelConfig] = []
    for key, value in data.items():
        if key == "custom":
            raise ConfigError(
                "models.custom: reserved; define a custom model as [models.NAME] with factory"
            )
        if key not in builtin and isinstance(value, Mapping) and "factory" in value:
            custom.append(CustomModelConfig.from_table(key, value))
        else:
            rest[key] = value
    return rest, tuple(custom)


def check_model_names(training: TrainingConfig, models: ModelsConfig) -> None:
    """Every name in `training.models` and `training.optional_models` is a built-in model or
    a custom model of `models`; ConfigError naming the first that is neither."""
    known = {m.name for m in models.custom}
    for key, names in (("models", training.models), ("optional_models", training.optional_models)):
        for i, name in enumerate(names):
            if name not in MODEL_NAMES and name not in known:
                raise ConfigError(
                    f"training.{key}[{i}] = {show(name)}: expected one of "
                    f"{', '.join(MODEL_NAMES)} or a custom model (a [models.{name}] table "
                    "with factory = \"package.module:callable\")"
                )
