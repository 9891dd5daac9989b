"""Fitting the base models on a Dask cluster (`training.dask_scheduler`).

`open_cluster` connects to the scheduler (bounded retries) for the length of one retrain;
`Cluster.fit_all` then fits as `daemon.training.fitting.fit_all` does, on the workers: the
training rows, labels and weights are sent to every worker once (`Client.scatter`) and each model
is one task (`Client.submit` of `fit_model` on the scattered arrays), so independent models fit
in parallel, one per worker thread. Each task runs the same `fit_model` with the same seed as a
fit on this machine, on as many threads as the smallest worker has: a fitted model's
probabilities do not depend on its thread count (daemon.training.fitting), so the cluster gives
the same models bit for bit (tests/training/test_cluster_fit.py).

Failures: a scheduler that cannot be reached (CONNECT_ATTEMPTS tries), a cluster without a
worker for `NO_WORKER_TIMEOUT_S`, or a model's task lost TASK_ATTEMPTS times raise
`ClusterError` naming the address, and the retrain ends `failed` with the champion kept. A
worker killed mid-fit is survived while another worker lives: distributed then cancels the
tasks (it forgets the data the dead worker held), and the model's task is submitted again with
the data sent again (tests/training/test_cluster_fit.py kills one with SIGKILL). With
`training.dask_fallback_local` an unreachable scheduler makes the retrain fit on this machine,
and the report's `cluster` says so.

The workers import `daemon` (and a custom model's factory module) themselves: they run the same
regimed version as the retrain.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.config import Config
from daemon.config.training import ModelsConfig
from daemon.errors import ClusterError, ModelFitError, RegimedError
from daemon.registry.ensemble import Model
from daemon.training.fitting import FitResult, fit_model, prepared
from daemon.training.placement import Placement, TaskFit
from daemon.training.spread import BOOSTERS, FORESTS, Partitions, Settings, fit_spread

__all__ = ["Cluster", "open_cluster"]

logger = logging.getLogger(__name__)

#: Attempts to reach the scheduler, each waiting up to CONNECT_TIMEOUT_S, RETRY_PAUSE_S apart.
CONNECT_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 2.0
#: Times a model's task is submitted when the cluster loses it (a worker dies mid-fit).
TASK_ATTEMPTS = 3
#: Seconds the cluster may have no worker at all (at the start or after losing them) before
#: the fit fails; a fit itself has no time limit.
NO_WORKER_TIMEOUT_S = 60.0
#: Seconds between checks on the tasks and the cluster while the tasks run.
POLL_S = 0.5


@dataclass
class Cluster:
    """The cluster of one retrain: its client (None when the retrain fits on this machine after
    all, `dask_fallback_local`) and what the report says of it."""

    address: str
    client: Any  # distributed.Client | None
    placement: Placement

    def fit_all(
        self,
        config: Config,
        X: npt.NDArray[np.float32],
        y: npt.NDArray[np.int8],
        w: npt.NDArray[np.float64] | None,
        progress: Callable[[str, Mapping[str, Any]], None],
        *,
        stage: str,
        names: Sequence[str],
        optional: Sequence[str],
    ) -> FitResult:
        """`fit_all`'s answer (models, fit seconds, failed optional models), fitted on the
        workers; the fits are added to `placement` under `stage`.

        In this order: the boosters (XGBoost, LightGBM) one at a time on the rows partitioned
        across the workers (their workers wait for each other, so nothing else runs beside
        them); then every other model as one task each, and meanwhile the forests' trees in
        batches of tasks (daemon.training.spread)."""
        client = self.client
        assert client is not None
        n_jobs = self._threads_per_task()
        fits = _Fits(names, optional, progress, stage)
        spread = {n for n in names if n in BOOSTERS or n in FORESTS}
        rows = _Rows(client, self.address, X, y, w)
        for name in (n for n in names if n in BOOSTERS):
            self._fit_spread(name, config, n_jobs, rows, fits, "partitions")
        tasks = [n for n in names if n not in spread]
        futures = {}
        send = _Sender(client, self.address, X, y, w) if tasks else None
        for name in tasks:
            assert send is not None
            fits.started(name)
            futures[send.fit(name, config, n_jobs)] = name
        for name in (n for n in names if n in spread and n in FORESTS):
            self._fit_spread(name, config, n_jobs, rows, fits, "trees")
        attempts = dict.fromkeys(tasks, 1)
        pending = set(futures)
        while pending:
            # Polled rather than `distributed.wait(..., return_when="FIRST_COMPLETED")`: that
            # failed with an UnboundLocalError from inside distributed (2026.8.0) when a worker
            # died while its task ran.
            done = {future for future in pending if future.status != "pending"}
            if not done:
                self._check_workers()
                time.sleep(POLL_S)
                continue
            for future in done:
                pending.discard(future)
                name = futures[future]
                try:
                    model, took, worker = future.result()
                except ModelFitError as exc:
                    fits.failed(name, exc)
                except RegimedError:
                    raise
                except Exception as exc:  # the cluster lost the task (KilledWorker, a comm error)
                    why = f"model {name}: {type(exc).__name__}: {exc}"
                    if attempts[name] >= TASK_ATTEMPTS:
                        raise ClusterError(
                            self.address, f"{why} (after {attempts[name]} attempts)"
                        ) from exc
                    logger.warning("Dask scheduler %s: %s; fitting it again", self.address, why)
                    attempts[name] += 1
                    assert send is not None
                    retry = send.fit(name, config, n_jobs, again=True)
                    futures[retry] = name
                    pending.add(retry)
                else:
                    fits.fitted(name, model, took, "task", (worker,))
        self.placement = self.placement.with_fits(fits.placed())
        return fits.result()

    def _fit_spread(
        self, name: str, config: Config, n_jobs: int, rows: _Rows, fits: _Fits, how: str
    ) -> None:
        """Fit `name` spread over the workers (daemon.training.spread) into `fits`. A failure
        while a worker left, or of the cluster itself, fits again, at most TASK_ATTEMPTS times
        (a forest by trees again, a booster whole as one task on a worker left); any other
        failure is the model's (`ModelFitError`)."""
        fits.started(name)
        alone = False  # after a worker was lost, a booster fits whole, as one task
        for attempt in range(1, TASK_ATTEMPTS + 1):
            before = set(self._check_workers())
            try:
                if alone:
                    data = (rows.X, rows.y, rows.w)
                    future = _submit_fit(self.client, name, data, config, n_jobs)
                    model, took, worker = future.result()
                    fits.fitted(name, model, took, "task", (worker,))
                    return
                model, took, workers = fit_spread(
                    name,
                    self.client,
                    rows.partitions(name) if how == "partitions" else None,
                    (rows.X, rows.y, rows.w),
                    Settings(config.models, n_jobs, config.training.seed),
                )
            except ModelFitError as exc:
                fits.failed(name, exc)
                return
            except RegimedError:
                raise
            except Exception as exc:
                lost = not before <= set(self._check_workers())
                if not (lost or _cluster_failure(exc)):
                    fits.failed(name, ModelFitError(name, f"{type(exc).__name__}: {exc}"))
                    return
                why = f"model {name}: {type(exc).__name__}: {exc}"
                if attempt >= TASK_ATTEMPTS:
                    raise ClusterError(self.address, f"{why} (after {attempt} attempts)") from exc
                logger.warning("Dask scheduler %s: %s; fitting it again", self.address, why)
                rows.forget()
                self._settle()
                if how == "partitions":
                    # A booster whose peers broke off is fitted again whole on one worker: the
                    # broken fit's parts leave LightGBM's network set up in the survivors'
                    # threads, which failed the next fit across the workers ("Socket send
                    # error") 1 in 4 times; the task frees it first (`_free_network`).
                    alone = True
            else:
                fits.fitted(name, model, took, how, workers)
                return

    def _settle(self) -> None:
        """Wait (at most NO_WORKER_TIMEOUT_S) until no worker runs a task: a booster's part on a
        worker that lost its peer runs on until its connection fails, and a new fit must not
        start beside it."""
        deadline = time.monotonic() + NO_WORKER_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if not any(self.client.processing().values()):
                    return
            except Exception as exc:  # the scheduler went away
                raise ClusterError(self.address, f"lost: {type(exc).__name__}: {exc}") from exc
            time.sleep(POLL_S)

    def _threads_per_task(self) -> int:
        """The smallest worker's thread count, after waiting (bounded) for a worker."""
        workers = self._check_workers()
        return max(1, min(int(w.get("nthreads", 1)) for w in workers.values()))

    def _check_workers(self) -> Mapping[str, Any]:
        """The scheduler's workers; `ClusterError` when none came within NO_WORKER_TIMEOUT_S."""
        deadline = time.monotonic() + NO_WORKER_TIMEOUT_S
        while True:
            try:
                workers: Mapping[str, Any] = self.client.scheduler_info()["workers"]
            except Exception as exc:  # the scheduler went away
                raise ClusterError(self.address, f"lost: {type(exc).__name__}: {exc}") from exc
            if workers:
                return workers
            if time.monotonic() > deadline:
                raise ClusterError(self.address, f"no worker for {NO_WORKER_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)


def _cluster_failure(exc: BaseException) -> bool:
    """Whether `exc` is the cluster's failure rather than the model's: distributed's own
    errors, a cancelled or timed-out future, a broken connection (LightGBM reports a peer
    that died as a socket error)."""
    if isinstance(exc, OSError | TimeoutError | CancelledError | asyncio.CancelledError):
        return True
    return type(exc).__module__.startswith("distributed") or "socket" in str(exc).lower()


class _Fits:
    """The fits of one stage as they finish: the models, their seconds, the optional models
    that failed, the placement records, and the progress events."""

    def __init__(
        self,
        names: Sequence[str],
        optional: Sequence[str],
        progress: Callable[[str, Mapping[str, Any]], None],
        stage: str,
    ) -> None:
        self.names = list(names)
        self.optional = set(optional)
        self.progress = progress
        self.stage = stage
        self.models: dict[str, Model] = {}
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.records: list[TaskFit] = []

    def _event(self, name: str) -> dict[str, Any]:
        return {"model": name, "index": self.names.index(name), "total": len(self.names)}

    def started(self, name: str) -> None:
        self.progress("model_started", self._event(name))

    def fitted(
        self, name: str, model: Model, took: float, how: str, workers: Sequence[str]
    ) -> None:
        self.models[name] = model
        self.seconds[name] = round(took, 3)
        worker = workers[0] if how == "task" and workers else None
        self.records.append(
            TaskFit(self.stage, name, worker, self.seconds[name], how, tuple(workers))
        )
        self.progress("model_finished", {**self._event(name), "seconds": self.seconds[name]})

    def failed(self, name: str, exc: ModelFitError) -> None:
        """A model that could not be fitted: raised again unless it is optional."""
        if name not in self.optional:
            raise exc
        logger.warning("optional model %s failed to fit: %s", name, exc)
        self.errors[name] = str(exc)
        self.seconds[name] = 0.0
        self.records.append(TaskFit(self.stage, name, None, None))
        self.progress("model_finished", {**self._event(name), "seconds": 0.0})

    def placed(self) -> tuple[TaskFit, ...]:
        return tuple(sorted(self.records, key=lambda f: self.names.index(f.model)))

    def result(self) -> FitResult:
        if not self.models:
            raise RegimedError("no model could be fitted")
        ordered = {name: self.models[name] for name in self.names if name in self.models}
        return ordered, {n: self.seconds[n] for n in self.names}, self.errors


class _Rows:
    """The training rows of one stage and, made on first use and kept for every booster, their
    partitions on the workers (daemon.training.spread.Partitions); `forget` drops them after
    a worker was lost."""

    def __init__(self, client: Any, address: str, X: Any, y: Any, w: Any) -> None:
        self.client = client
        self.address = address
        self.X, self.y, self.w = X, y, w
        self._partitions: Partitions | None = None

    def partitions(self, name: str) -> Partitions:
        """The partitions, after the rows were checked for `name` (`ModelFitError`)."""
        x, labels, weights = prepared(name, self.X, self.y, self.w)
        if self._partitions is None:
            self._partitions = Partitions.send(self.client, x, labels, weights, NO_WORKER_TIMEOUT_S)
        return self._partitions

    def forget(self) -> None:
        self._partitions = None


class _Sender:
    """The training rows, labels and weights of one stage sent to every worker once, and each
    model's fit submitted as a task on them. A worker that dies takes the scheduler's record of
    the sent data with it (distributed forgets scattered data a dead worker held, even when
    another worker has a copy: its tasks end "cancelled"), so a task fitted again sends the
    data again first."""

    def __init__(self, client: Any, address: str, X: Any, y: Any, w: Any) -> None:
        self.client = client
        self.address = address
        self.arrays = [X, y, w]
        self.data = self._scatter()

    def _scatter(self) -> Any:
        """The arrays on every worker; `ClusterError` when no worker takes them in time."""
        try:
            return self.client.scatter(self.arrays, broadcast=True, timeout=NO_WORKER_TIMEOUT_S)
        except Exception as exc:
            raise ClusterError(
                self.address, f"cannot send the training rows: {type(exc).__name__}: {exc}"
            ) from exc

    def fit(self, name: str, config: Config, n_jobs: int, *, again: bool = False) -> Any:
        if again:
            self.data = self._scatter()
        return _submit_fit(self.client, name, self.data, config, n_jobs)


def _submit_fit(client: Any, name: str, data: Sequence[Any], config: Config, n_jobs: int) -> Any:
    """`name`'s fit on `data` (rows, labels, weights: arrays, or futures of them on the
    workers) as one task. The key names the model, so the scheduler's dashboard and logs say
    which fit is where."""
    return client.submit(
        _fit_task,
        name,
        *data,
        config.models,
        n_jobs,
        config.training.seed,
        key=f"fit-{name}-{uuid.uuid4().hex}",
    )


def _free_network() -> None:
    """LightGBM's `LGBM_NetworkFree` in this thread: its network state is thread-local, and a
    distributed fit that broke leaves it set up in the worker thread that ran its part
    (lightgbm.dask frees it only after a fit that succeeded), so a fit there, even one on this
    worker alone, failed on the dead peer's sockets ("Socket send error")."""
    from lightgbm import basic

    lib: Any = getattr(basic, "_LIB")  # noqa: B009 (private, not in the stubs)
    basic._safe_call(lib.LGBM_NetworkFree())


def _fit_task(
    name: str,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    w: npt.NDArray[np.float64] | None,
    config: ModelsConfig,
    n_jobs: int,
    seed: int,
) -> tuple[Model, float, str]:
    """One model fitted on a worker: (the model, its fit seconds there, the worker's address)."""
    from distributed import get_worker

    if name == "lightgbm":
        _free_network()
    started = time.perf_counter()
    model = fit_model(name, X, y, w, config, n_jobs=n_jobs, seed=seed)
    return model, time.perf_counter() - started, str(get_worker().address)


@contextmanager
def open_cluster(config: Config) -> Iterator[Cluster | None]:
    """The cluster of `training.dask_scheduler` for one retrain (None when it is empty), closed
    on exit. An unreachable scheduler raises `ClusterError` after CONNECT_ATTEMPTS, or, with
    `training.dask_fallback_local`, gives a `Cluster` without a client (fit on this machine)."""
    address = config.training.dask_scheduler
    if not address:
        yield None
        return
    try:
        client = _connect(address)
    except ClusterError as exc:
        if not config.training.dask_fallback_local:
            raise
        logger.warning("%s; fitting on this machine (training.dask_fallback_local)", exc)
        yield Cluster(address, None, Placement(address, fallback=exc.reason))
        return
    try:
        workers = client.scheduler_info()["workers"]
        placement = Placement(
            address, len(workers), sum(int(w.get("nthreads", 0)) for w in workers.values())
        )
        logger.info(
            "fitting on the Dask cluster %s: %d workers, %d threads",
            address,
            placement.workers,
            placement.threads,
        )
        yield Cluster(address, client, placement)
    finally:
        client.close()


def _connect(address: str) -> Any:
    """A `distributed.Client` of `address`, or `ClusterError` after CONNECT_ATTEMPTS tries."""
    from distributed import Client

    reason = ""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            logger.warning("Dask scheduler %s, attempt %d: %s", address, attempt, reason)
        if attempt < CONNECT_ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    raise ClusterError(address, f"unreachable after {CONNECT_ATTEMPTS} attempts: {reason}")
