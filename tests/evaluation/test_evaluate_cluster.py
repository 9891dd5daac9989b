"""`regimed evaluate` with `training.dask_scheduler`: every fold's fits run on a real local
cluster (tests/dask_cluster.py) and the results equal those of this machine within the
tolerance the cluster states (daemon.training.spread): LightGBM across the workers, the random
forest by trees. One small run: one yearly fold, small models, few bootstrap samples."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from daemon.config import Config
from daemon.config.evaluate import EvaluateConfig
from daemon.evaluation import evaluate
from daemon.training.spread import BALANCED_ACCURACY_TOLERANCE
from tests.factories import SMALL_MODELS

pytestmark = pytest.mark.integration

SETTINGS = EvaluateConfig(
    start=dt.date(2011, 1, 1),
    step="year",
    models=("lightgbm", "random_forest"),
    bootstrap_samples=50,
)
END = dt.date(2012, 1, 1)


def _balanced(doc: dict[str, Any]) -> dict[tuple[str, str], float | None]:
    """Every variant's balanced accuracy, per regime and overall, and the control's."""
    out: dict[tuple[str, str], float | None] = {}
    for name, variant in doc["variants"].items():
        out[name, "overall"] = variant["overall"]["balanced_accuracy"]
        for regime, group in variant["per_regime"].items():
            out[name, regime] = group["balanced_accuracy"]
    for name, control in doc["controls"].items():
        out[name, "overall"] = control["balanced_accuracy"]
    return out


def test_evaluate_on_the_cluster_gives_this_machines_results_within_the_tolerance(dask_cluster):
    from distributed import Client

    config = Config().replace(models=SMALL_MODELS)
    local = evaluate(config, SETTINGS, end=END).doc
    training = dataclasses.replace(config.training, dask_scheduler=dask_cluster.address)
    with Client(dask_cluster.address, timeout=30) as client:
        before = client.run(lambda dask_worker: len(dask_worker.state.log))
        remote = evaluate(config.replace(training=training), SETTINGS, end=END).doc
        after = client.run(lambda dask_worker: len(dask_worker.state.log))

    assert remote["folds"][0]["test_rows"] == local["folds"][0]["test_rows"] > 0
    mine, theirs = _balanced(local), _balanced(remote)
    assert mine.keys() == theirs.keys()
    assert all((mine[k] is None) == (theirs[k] is None) for k in mine), (mine, theirs)
    gaps = {k: abs(mine[k] - theirs[k]) for k in mine if mine[k] is not None}
    assert gaps and max(gaps.values()) <= BALANCED_ACCURACY_TOLERANCE, gaps
    # the references are not fitted: identical
    for name in local["naive_names"]:
        assert remote["variants"][name] == local["variants"][name]
    # both workers ran tasks of this evaluation
    assert all(after[w] > before[w] for w in before), (before, after)
