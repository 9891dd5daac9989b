"""Shared test factories: a daemon configuration on a test broker, the child processes of a
process (read from /proc), slices of the bundled history with their regimes, and base models
small enough to fit in a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daemon.config import Config, KafkaConfig, MetricsConfig, RegimeConfig, StoreConfig
from daemon.config.training import (
    ExtraTreesConfig,
    GradientBoostingConfig,
    LightGBMConfig,
    MLPConfig,
    ModelsConfig,
    RandomForestConfig,
    SVMConfig,
    XGBoostConfig,
)
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.pipeline.features import FEATURE_NAMES
from daemon.pipeline.regime import label_history

#: The eight base models with few trees, iterations and kernel components: every fit on a
#: few thousand rows takes well under a second.
SMALL_MODELS = ModelsConfig(
    random_forest=RandomForestConfig(n_estimators=10, max_depth=5),
    xgboost=XGBoostConfig(n_estimators=20),
    lightgbm=LightGBMConfig(n_estimators=20),
    extra_trees=ExtraTreesConfig(n_estimators=10, max_depth=5),
    gradient_boosting=GradientBoostingConfig(max_iter=20),
    mlp=MLPConfig(hidden_layer_sizes=(16,), max_iter=20),
    svm=SVMConfig(n_components=50),
)


def broker_config(bootstrap: str, topic: str, group: str, member: str, state: Path) -> Config:
    """A daemon configuration for a test broker: the test timeouts of kafka-python 3, a store
    in `state` and metrics on a free port."""
    kafka = KafkaConfig(
        bootstrap_servers=(bootstrap,),
        topic=topic,
        group_id=group,
        group_instance_id=member,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=500,
    )
    return Config(
        kafka=kafka,
        store=StoreConfig(path=str(state / "regimed.db")),
        metrics=MetricsConfig(port=0),
    )


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a daemon's writer and helper processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def bundled_slice(name: str, start: str, end: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bundled daily bars of `name` (sp500, nasdaq) from `start` to `end` (ISO days,
    included) and their regime labels (columns vix, vix_source, regime) under the default
    rules with the bundled VIX, labelled over the whole history so the slice's first bars carry
    the regimes a live stream would give them."""
    bars = read_bars_csv(bundled_path(name))
    labels = label_history(RegimeConfig(), bars["close"], read_vix_csv(bundled_path("vix")))
    keep = (bars.index >= pd.Timestamp(start)) & (bars.index <= pd.Timestamp(end))
    return bars[keep], labels[keep]


def assert_same_rows(
    got: pd.DataFrame, expected: pd.DataFrame, what: str, tol: float = 1e-9
) -> None:
    """Feature rows `got` are `expected`'s: the feature columns, the same days, every value
    within `tol` (relative and absolute); a failure names the first feature and day that
    differ and both values."""
    assert list(got.columns) == list(FEATURE_NAMES)
    assert list(got.index) == list(expected.index), f"{what}: rows on other days"
    g, e = got.to_numpy(), expected.to_numpy()
    bad = ~np.isclose(g, e, rtol=tol, atol=tol)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        pytest.fail(
            f"{what}: {FEATURE_NAMES[col]} at {got.index[row]}: {g[row, col]!r}, "
            f"expected {e[row, col]!r}"
        )
