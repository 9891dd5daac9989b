"""The retrain on a Dask cluster (`training.dask_scheduler`, daemon.training.cluster): the
models are fitted by the workers of a real local cluster (tests/dask_cluster.py) and give the
same scores as on this machine; an unreachable scheduler fails the run naming the address, or
falls back to this machine; a worker killed mid-fit is survived (Dask runs its task again on the
other worker).

The store holds the bundled S&P 500 from 2008 (about 2,700 labelled rows), labelled by the sign
of a feature so that a candidate is promoted and refit; two small models.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import Config, parse_config
from daemon.errors import RetrainFailed
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from daemon.training import cluster as cluster_module
from daemon.training.spread import BALANCED_ACCURACY_TOLERANCE, PROBABILITY_TOLERANCE
from daemon.training.trainer import retrain
from tests.dask_cluster import dask_cluster as running_cluster
from tests.dask_cluster import free_port
from tests.factories import copy_store

pytestmark = pytest.mark.integration

HERE = "tests.training.test_cluster_fit"
MODELS = ("random_forest", "lightgbm")


def _config(
    db: Path,
    scheduler: str = "",
    *,
    fallback: bool = False,
    extra: str = "",
    names: tuple[str, ...] = MODELS,
    lightgbm_trees: int = 30,
) -> Config:
    models = ", ".join(f'"{m}"' for m in names)
    return parse_config(
        f'[store]\npath = "{db}"\n'
        f"[training]\nmodels = [{models}]\nn_jobs = 1\n"
        f'dask_scheduler = "{scheduler}"\ndask_fallback_local = {str(fallback).lower()}\n'
        "[models.random_forest]\nn_estimators = 20\n"
        f"[models.lightgbm]\nn_estimators = {lightgbm_trees}\n" + extra,
        env={},
    )


def _scores(report: Any) -> dict[str, Any]:
    """Every per-regime and overall score of the validation, by model and the ensemble."""
    doc = report.to_json()["validation"]
    return {"ensemble": (doc["per_regime"], doc["overall"]), "models": doc["models"]}


def _without_seconds(scores: dict[str, Any]) -> dict[str, Any]:
    models = {
        k: {f: v for f, v in m.items() if f != "fit_seconds"} for k, m in scores["models"].items()
    }
    return {**scores, "models": models}


def _ba_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest difference in balanced accuracy between two `_scores`: per regime and
    overall for the vote, overall for each model (a figure null in both counts as no gap)."""
    pairs = [
        (a["ensemble"][0][r]["balanced_accuracy"], b["ensemble"][0][r]["balanced_accuracy"])
        for r in b["ensemble"][0]
    ]
    pairs.append((a["ensemble"][1]["balanced_accuracy"], b["ensemble"][1]["balanced_accuracy"]))
    pairs += [
        (a["models"][m]["balanced_accuracy"], b["models"][m]["balanced_accuracy"])
        for m in b["models"]
    ]
    assert all((x is None) == (y is None) for x, y in pairs), pairs
    return max((abs(x - y) for x, y in pairs if x is not None), default=0.0)


def _cpu_seconds(client: Any) -> dict[str, float]:
    return {k: float(v) for k, v in client.run(time.process_time).items()}


def test_the_workers_fit_and_give_the_same_scores_as_this_machine(dask_cluster, small_db, tmp_path):
    from distributed import Client

    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    local = retrain(_config(copy_store(small_db, tmp_path / "local")))
    with Client(dask_cluster.address, timeout=30) as client:
        before = _cpu_seconds(client)
        remote = retrain(_config(copy_store(small_db, tmp_path / "remote"), dask_cluster.address))
        after = _cpu_seconds(client)

    assert local.cluster is None and local.promoted, local.reason
    # the forest's trees are built on the workers as here: the same scores exactly; LightGBM
    # across the workers, and the vote it is part of, within the stated tolerance
    mine, theirs = _without_seconds(_scores(local)), _without_seconds(_scores(remote))
    assert theirs["models"]["random_forest"] == mine["models"]["random_forest"]
    assert _ba_gap(theirs, mine) <= BALANCED_ACCURACY_TOLERANCE
    assert remote.outcome == local.outcome == "promoted"

    placement = remote.cluster
    assert placement is not None and placement.fallback is None
    assert (placement.scheduler, placement.workers, placement.threads) == (
        dask_cluster.address,
        2,
        2,
    )
    stages = [(f.stage, f.model, f.how) for f in placement.fits]
    hows = {"random_forest": "trees", "lightgbm": "partitions"}
    assert stages == [(s, m, hows[m]) for s in ("fit", "refit") for m in MODELS]
    workers = set(dask_cluster.worker_pids)
    for f in placement.fits:  # spread over the workers, none fitted whole by one
        assert f.worker is None and f.workers and set(f.workers) <= workers, f
        assert f.seconds is not None and f.seconds > 0
    # LightGBM fits on a partition of the rows on each worker
    assert all(set(f.workers) == workers for f in placement.fits if f.model == "lightgbm")
    assert remote.to_json()["cluster"]["scheduler"] == dask_cluster.address

    # the workers did the fitting (fit and refit): together they spent on CPU at least half
    # the seconds the fit stage took on this machine
    spent = sum(after[w] - before[w] for w in before)
    fitted = sum(m["fit_seconds"] or 0.0 for m in local.to_json()["validation"]["models"].values())
    assert spent >= 0.5 * fitted > 0, (spent, fitted)


def test_spread_fits_give_this_machines_forests_exactly_and_boosters_within_the_tolerance(
    dask_cluster, small_db
):
    """XGBoost and LightGBM on the rows partitioned across two workers, the forests by trees,
    against `fit_model` on this machine: the same seed and rows, labels made noisy (30% flipped)
    so that the boosters' probabilities are not all near 0 or 1."""
    from daemon.config.training import MODEL_NAMES
    from daemon.pipeline.features.defs import FEATURE_VERSION
    from daemon.registry.ensemble import positive_proba
    from daemon.training.cluster import open_cluster
    from daemon.training.fitting import fit_model
    from daemon.training.sampling import row_weights
    from daemon.training.scoring import score
    from daemon.training.spread import SPREAD

    names = tuple(m for m in MODEL_NAMES if m in SPREAD)
    extra = "[models.xgboost]\nn_estimators = 30\n[models.extra_trees]\nn_estimators = 20\n"
    config = _config(small_db, dask_cluster.address, extra=extra, names=names)
    with Store.open(config.store) as store:
        meta, X = store.read_samples(
            source=None, labelled=True, feature_version=FEATURE_VERSION, target=config.label.key
        )
    regimes = meta["regime"].to_numpy().astype(str)
    y = meta["label"].to_numpy(dtype=np.int8) ^ (np.random.default_rng(5).random(len(meta)) < 0.3)
    y = y.astype(np.int8)
    cut = int(0.7 * len(y))
    w = row_weights(regimes[:cut], config.weights.regime.as_dict())
    with open_cluster(config) as cluster:
        assert cluster is not None
        remote, _, failed = cluster.fit_all(
            config, X[:cut], y[:cut], w, lambda *_: None, stage="fit", names=names, optional=()
        )
        hows = {f.model: f.how for f in cluster.placement.fits}
    assert not failed and list(remote) == list(names)
    assert hows == {
        m: "trees" if m in ("random_forest", "extra_trees") else "partitions" for m in names
    }

    gaps = {}
    for name in names:
        local = fit_model(
            name, X[:cut], y[:cut], w, config.models, n_jobs=1, seed=config.training.seed
        )
        assert type(remote[name]) is type(local)  # the bundle stores it as it stores a local fit
        p_local, p_remote = positive_proba(local, X[cut:]), positive_proba(remote[name], X[cut:])
        mine = score(y[cut:], p_local > 0.5, regimes[cut:], 30)
        theirs = score(y[cut:], p_remote > 0.5, regimes[cut:], 30)
        ba = [(mine.overall, theirs.overall)] + [
            (mine.per_regime[r], theirs.per_regime[r]) for r in mine.per_regime
        ]
        gaps[name] = (
            float(np.abs(p_local - p_remote).max()),
            max(
                abs(a.balanced_accuracy - b.balanced_accuracy)
                for a, b in ba
                if a.balanced_accuracy is not None
            ),
        )
        if name in ("random_forest", "extra_trees"):
            assert np.array_equal(p_local, p_remote), name
    for name in ("xgboost", "lightgbm"):
        probability, balanced = gaps[name]
        assert probability <= PROBABILITY_TOLERANCE and balanced <= BALANCED_ACCURACY_TOLERANCE, (
            gaps
        )
        assert probability > 0, gaps  # a distributed booster really cuts its bins otherwise


def test_on_one_worker_thread_the_forest_is_fitted_whole_by_that_worker(db):
    """joblib's Dask backend would build every tree on this machine when the cluster has one
    thread; the worker fits the forest whole instead, the same forest."""
    from daemon.registry.ensemble import positive_proba
    from daemon.training.cluster import open_cluster
    from daemon.training.fitting import fit_model

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(np.int8)
    with running_cluster(workers=1) as cluster:
        config = _config(db, cluster.address, names=("random_forest",))
        with open_cluster(config) as on:
            assert on is not None
            models, _, _ = on.fit_all(
                config, X, y, None, lambda *_: None, stage="fit", names=("random_forest",),
                optional=(),
            )  # fmt: skip
            (fit,) = on.placement.fits
    assert (fit.how, fit.workers) == ("trees", tuple(cluster.worker_pids))
    here = fit_model(
        "random_forest", X, y, None, config.models, n_jobs=1, seed=config.training.seed
    )
    assert np.array_equal(positive_proba(models["random_forest"], X), positive_proba(here, X))


def test_an_unreachable_scheduler_fails_the_run_naming_it_and_the_champion_stays(db, monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(cluster_module, "RETRY_PAUSE_S", 0.1)
    champion = retrain(_config(db))
    assert champion.promoted
    down = f"tcp://127.0.0.1:{free_port()}"

    with pytest.raises(RetrainFailed) as info:
        retrain(_config(db, down))

    assert down in str(info.value) and "training.dask_scheduler" in str(info.value)
    assert "3 attempts" in str(info.value)
    assert info.value.report["outcome"] == "failed"
    with Store.open(_config(db).store) as store:
        registry = Registry(store)
        assert registry.champion() is not None
        assert registry.champion().version == champion.version
        last = registry.last_retrain_run()
    assert last is not None and down in last.reason


def test_with_fallback_an_unreachable_scheduler_fits_on_this_machine(db, monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(cluster_module, "RETRY_PAUSE_S", 0.1)
    down = f"tcp://127.0.0.1:{free_port()}"

    report = retrain(_config(db, down, fallback=True))

    assert report.promoted, report.reason
    assert report.cluster is not None and report.cluster.scheduler == down
    assert report.cluster.fallback and "3 attempts" in report.cluster.fallback
    assert report.cluster.fits == ()


class Slow:
    """A model whose fit takes `seconds` (time to kill its worker mid-fit), then predicts the
    base rate."""

    def __init__(self, seconds: float = 6.0) -> None:
        self.seconds = seconds

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Slow:
        time.sleep(self.seconds)
        self.classes_ = np.array([0, 1])
        self.rate_ = float(np.mean(y))
        return self

    def predict_proba(self, X: Any) -> Any:
        p = np.full(len(X), self.rate_)
        return np.column_stack([1.0 - p, p])


def test_a_worker_killed_mid_fit_is_survived_on_the_other_worker(db):
    with running_cluster(workers=2) as cluster:
        outcome, victims = _kill_mid_fit(cluster, db, every=False)
    report = outcome["report"]
    assert not isinstance(report, Exception), report
    assert report.outcome != "failed", report.reason
    survivor = set(cluster.worker_pids) - set(victims)
    slow = [f for f in report.cluster.fits if f.model == "slow"]
    assert slow and {f.worker for f in slow} <= survivor
    assert os.getpid() not in cluster.worker_pids.values()


def test_a_worker_killed_while_lightgbm_fits_across_the_workers_is_survived(db):
    """LightGBM's fit spread over both workers loses one: the fit starts again, whole, as one
    task on the worker left (which frees the broken fit's network there), and the retrain goes
    on."""
    with running_cluster(workers=2) as cluster:
        outcome, victims = _kill_mid_fit(
            cluster,
            db,
            every=False,
            names=("lightgbm",),
            lightgbm_trees=3000,
            fitting=_lightgbm_part,
        )
    report = outcome["report"]
    assert not isinstance(report, Exception), report
    assert report.outcome != "failed", report.reason
    survivor = set(cluster.worker_pids) - set(victims)
    fits = [f for f in report.cluster.fits if f.model == "lightgbm"]
    # the fit that lost a worker ran again whole as a task; the refit spreads over the survivor
    assert fits and fits[0].stage == "fit" and fits[0].how == "task", fits
    assert all(set(f.workers) == survivor for f in fits), fits


def test_every_worker_killed_mid_fit_fails_the_run_naming_the_scheduler(db, monkeypatch):
    monkeypatch.setattr(cluster_module, "NO_WORKER_TIMEOUT_S", 3.0)
    with running_cluster(workers=2) as cluster:
        outcome, victims = _kill_mid_fit(cluster, db, every=True)
    failure = outcome["report"]
    assert isinstance(failure, RetrainFailed), failure
    assert cluster.address in str(failure) and "training.dask_scheduler" in str(failure)
    assert failure.report["outcome"] == "failed"
    assert len(victims) == 2


def _kill_mid_fit(
    cluster: Any,
    db: Path,
    *,
    every: bool,
    names: tuple[str, ...] = ("lightgbm", "slow"),
    lightgbm_trees: int = 30,
    fitting: Callable[[Any], bool] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Run a retrain of `names` (LightGBM and `Slow`) on `cluster` in a thread; once a task
    that `fitting` picks (a fit of `Slow`) runs, SIGKILL its worker (`every`: every worker);
    (the outcome, the killed workers)."""
    from distributed import Client

    fitting = fitting or _slow
    extra = f'[models.slow]\nfactory = "{HERE}:Slow"\ntrusted = ["{HERE}.Slow"]\n'
    config = _config(db, cluster.address, extra=extra, names=names, lightgbm_trees=lightgbm_trees)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(report=_run(config)))
    thread.start()
    with Client(cluster.address, timeout=30) as client:
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:
            time.sleep(0.2)
            busy = [w for w, keys in client.processing().items() if any(fitting(k) for k in keys)]
        assert busy, "the fit did not start"
        time.sleep(0.5)  # the fit has started
        victims = list(cluster.worker_pids) if every else busy[:1]
        assert victims
        for worker in victims:
            cluster.kill_worker(worker)
    thread.join(180)
    assert not thread.is_alive()
    return outcome, victims


def _lightgbm_part(key: Any) -> bool:
    """Whether a task key is a worker's part of a LightGBM fit spread over the workers."""
    return "_train_part" in str(key)


def _slow(key: Any) -> bool:
    """Whether a task key is a fit of the `Slow` model (keys name their model)."""
    return str(key).startswith("fit-slow-")


def _run(config: Config) -> Any:
    try:
        return retrain(config)
    except Exception as exc:  # handed to the test's thread
        return exc
