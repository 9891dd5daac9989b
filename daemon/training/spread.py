"""One model's fit spread over the workers of a Dask cluster (daemon.training.cluster).

- **XGBoost and LightGBM** through their own Dask interfaces (`xgboost.dask.DaskXGBClassifier`,
  `lightgbm.DaskLGBMClassifier`) on the training rows, labels and weights partitioned across
  the workers (`Partitions`: one contiguous block of rows per worker, sent once per stage and
  shared by both). The workers build one model together, exchanging histograms; the fitted
  model comes back as the local estimator a fit on this machine gives (an `XGBClassifier`
  holding the booster, `DaskLGBMClassifier.to_local()`), so the bundle, its artifacts and the
  scoring see no difference in kind. LightGBM opens one listening port per worker: with no port
  set it finds a free one on each worker itself (lightgbm.dask, "Finding random open ports").
- **The forests** (random forest, extra trees) through joblib's Dask backend: the trees are
  built in batches as tasks across the workers (the rows sent once per forest by the backend)
  and gathered into one forest. Each tree's seed is drawn before they are built, so the forest
  is the one a fit on this machine gives, bit for bit. On a cluster of one worker thread in all
  (joblib would then build every tree here) that worker fits the forest whole, as one task.

Same answer: the forests exactly; the boosters within the tolerance docs/training.md states (a
distributed booster cuts its histogram bins from the partitions' sketches, not from every row
at once, so some splits fall elsewhere; tests/training/test_cluster_fit.py measures it).
The boosters' workers talk to each other while they fit, so `daemon.training.cluster` runs
them one at a time, before any other fit, on the whole cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.config.training import ModelsConfig
from daemon.errors import ModelFitError
from daemon.registry.ensemble import Model
from daemon.training.fitting import fit_model, prepared
from daemon.training.models import build_model

__all__ = [
    "BALANCED_ACCURACY_TOLERANCE",
    "BOOSTERS",
    "FORESTS",
    "PROBABILITY_TOLERANCE",
    "SPREAD",
    "Partitions",
    "Settings",
    "fit_spread",
]

#: Fitted by the workers together, on the rows partitioned across them.
BOOSTERS = ("xgboost", "lightgbm")
#: Fitted by trees, a batch of trees per task, through joblib's Dask backend.
FORESTS = ("random_forest", "extra_trees")
SPREAD = frozenset(BOOSTERS + FORESTS)

#: The tolerance of a booster fitted across the workers against the same fit on this machine
#: (docs/training.md, "On a Dask cluster", has the figures measured; the tests in
#: tests/training/test_cluster_fit.py and tests/evaluation/test_evaluate_cluster.py hold it):
#: the largest difference of a row's probability, and of a balanced accuracy per regime or
#: overall, of the booster or of a vote it is part of. The forests: none, they are exact.
PROBABILITY_TOLERANCE = 0.3
BALANCED_ACCURACY_TOLERANCE = 0.1

#: The part of a joblib batch's task key that names a forest's tree building.
_TREE_TASK = "_parallel_build_trees"


@dataclass(frozen=True)
class Partitions:
    """The rows, labels and weights of one stage as Dask arrays, one contiguous block of rows on
    each worker (`workers`, in address order), sent there once."""

    X: Any  # dask.array.Array
    y: Any
    w: Any  # None: every row counts once
    workers: tuple[str, ...]

    @classmethod
    def send(
        cls,
        client: Any,
        X: npt.NDArray[Any],
        y: npt.NDArray[Any],
        w: npt.NDArray[Any] | None,
        timeout: float,
    ) -> Partitions:
        """Split the rows into one block per worker (fewer when there are fewer rows) and send
        each block to its worker. The split depends only on the row and worker counts, so the
        same data on the same cluster gives the same models."""
        workers = tuple(sorted(client.scheduler_info()["workers"]))
        if not workers:
            raise OSError("no worker to send the training rows to")
        n = len(y)
        bounds = np.linspace(0, n, min(len(workers), max(n, 1)) + 1).astype(np.int64)
        blocks = list(zip(workers, bounds[:-1], bounds[1:], strict=False))

        def array(a: npt.NDArray[Any] | None) -> Any:
            if a is None:
                return None
            import dask.array as da
            from dask.delayed import delayed

            parts = [
                da.from_delayed(  # type: ignore[no-untyped-call]
                    delayed(
                        client.scatter(a[lo:hi], workers=[worker], hash=False, timeout=timeout)
                    ),
                    shape=(int(hi - lo), *a.shape[1:]),
                    dtype=a.dtype,
                )
                for worker, lo, hi in blocks
            ]
            return da.concatenate(parts)  # type: ignore[no-untyped-call]

        return cls(array(X), array(y), array(w), tuple(worker for worker, _, _ in blocks))


@dataclass(frozen=True)
class Settings:
    """What a fit on this machine takes besides the rows: the models' hyper-parameters, the
    threads of one worker, the seed."""

    models: ModelsConfig
    n_jobs: int
    seed: int

    def build(self, name: str) -> Model:
        return build_model(name, self.models, n_jobs=self.n_jobs, seed=self.seed)


def fit_spread(
    name: str,
    client: Any,
    parts: Partitions | None,
    rows: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None],
    settings: Settings,
) -> tuple[Model, float, tuple[str, ...]]:
    """`name` (one of `SPREAD`) fitted across the cluster of `client`: (the local model, the fit
    seconds, the workers that took part). A booster needs `parts` (the stage's rows, already
    checked with `prepared`); a forest fits on `rows` (X, y, w) through joblib.

    Raises `ModelFitError` for unusable rows; the library's and the cluster's exceptions pass
    through for the caller to tell apart (daemon.training.cluster)."""
    started = time.perf_counter()
    if name in FORESTS:
        model, workers = _forest(name, client, rows, settings)
    elif name in BOOSTERS:
        if parts is None:
            raise ModelFitError(name, "no partitioned rows to fit on")
        model = _BOOSTER_FITS[name](client, parts, settings)
        workers = parts.workers
    else:
        raise ModelFitError(name, f"not one of the models fitted across workers: {sorted(SPREAD)}")
    return model, time.perf_counter() - started, workers


def _xgboost(client: Any, parts: Partitions, settings: Settings) -> Model:
    """`xgboost.dask.DaskXGBClassifier` on the partitions; its booster in an `XGBClassifier`
    built as on this machine."""
    from xgboost import dask as dxgb

    local = settings.build("xgboost")
    model = dxgb.DaskXGBClassifier(**local.get_params())
    model.client = client
    with client.as_current():  # xgboost asks distributed for the current client as well
        model.fit(parts.X, parts.y, sample_weight=parts.w)
    local.load_model(bytearray(model.get_booster().save_raw(raw_format="ubj")))
    return local


def _lightgbm(client: Any, parts: Partitions, settings: Settings) -> Model:
    """`lightgbm.DaskLGBMClassifier` on the partitions, `to_local()`. Each worker fits on as
    many threads as it has: lightgbm.dask sets them, and warns that it ignores the thread count
    its own classifier always passes (4.7), which says nothing about this fit."""
    import lightgbm

    lightgbm.register_logger(_LightGBMLog())
    params = {k: v for k, v in settings.build("lightgbm").get_params().items() if k != "n_jobs"}
    model = lightgbm.DaskLGBMClassifier(client=client, **params)
    with client.as_current():
        model.fit(parts.X, parts.y, sample_weight=parts.w)
    return model.to_local()


class _LightGBMLog:
    """LightGBM's Python-side messages in regimed's log. Without a logger lightgbm.dask prints
    its progress ("Finding random open ports for workers") to standard output, which
    `regimed retrain --json` keeps for the report; its warning that it ignores the thread count
    (which its own classifier always passes, 4.7) says nothing about the fit, so it goes to
    debug."""

    def info(self, msg: str) -> None:
        _lightgbm_log.debug("%s", msg)

    def warning(self, msg: str) -> None:
        ignored = "will be ignored" in msg and ("n_jobs" in msg or "num_threads" in msg)
        _lightgbm_log.log(logging.DEBUG if ignored else logging.WARNING, "%s", msg)


_lightgbm_log = logging.getLogger("lightgbm")


_BOOSTER_FITS = {"xgboost": _xgboost, "lightgbm": _lightgbm}


def _forest(
    name: str,
    client: Any,
    rows: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None],
    settings: Settings,
) -> tuple[Model, tuple[str, ...]]:
    """A forest whose trees are built as tasks on the workers (joblib's Dask backend); the
    workers that built them."""
    import joblib  # type: ignore[import-untyped]
    from distributed import get_task_stream

    x, labels, weights = prepared(name, *rows)
    threads = {str(w): int(n) for w, n in client.ncores().items()}
    if sum(threads.values()) <= 1:
        # joblib would build every tree here, on this machine: the one worker fits it whole.
        whole = client.submit(
            fit_model, name, x, labels, weights, settings.models,
            n_jobs=settings.n_jobs, seed=settings.seed, pure=False,
        )  # fmt: skip
        return whole.result(), tuple(threads)
    model = settings.build(name)
    model.set_params(n_jobs=-1)  # as many batches at once as the cluster has threads
    try:
        with (
            get_task_stream(client=client) as stream,
            joblib.parallel_config(backend="dask", client=client),
        ):
            model.fit(x, labels, sample_weight=weights)
    finally:
        # It scores on one thread, as a forest fitted here does (daemon.training.fitting).
        model.set_params(n_jobs=1)
    return model, _workers_of(stream.data)


def _workers_of(records: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The workers that ran tree-building tasks, in address order."""
    return tuple(sorted({str(r["worker"]) for r in records if _TREE_TASK in str(r.get("key"))}))
