"""Benchmark a full retrain (load from SQLite, split, sample, weight, fit the base models and the
ensemble, validate, gate, write the artifact) on about 100,000 samples.

The store holds the bundled S&P 500 and NASDAQ history as live samples, the bundled archive, and
enough synthetic regime-switching symbols (`regimed replay --synthetic`'s generator, through the
same batch feature and label code) to reach `--samples`. The store is built once into a
temporary directory (not timed); then `regimed retrain`'s code path runs with the default
configuration and prints the time of each stage and each model.

`--busy` instead times whole retrains in the daemon's retrain process (`RetrainRunner`, as the
daemon runs them) beside a busy ingest: an embedded broker, `regimed replay --synthetic` publishing
as fast as it can, and the daemon's `MarketDataConsumer` (with its writer process) consuming in a
thread of this process, as in `regimed run`. Each round runs the retrain twice, alternately: with
the old thread policy (the daemon's environment as it is, `training.n_jobs = 2`) and the current
one (the default `training.n_jobs = "auto"` and the environment `daemon.training.threads` gives the
retrain process); a third run per round takes the current policy with `n_jobs = 2`, to tell the
wait policy's part from the thread count's. The first two also run once before the load. Each
retrain trains on a fresh copy of the same store; the table gives its time, the fit time of the
OpenMP models and the bars the consumer stored per second while it ran.

`--refit` instead times whole retrains of the same store without and with the refit of the
promoted members (`training.refit` false and true, alternately, `--runs` of each), each on a fresh
copy, with `gate.min_edge = -1` so that every candidate is promoted and the refit runs; the table
gives the retrain time, the refit's fit time and the size of the bundle written.

`--dask ADDR` fits the whole retrain's models on that Dask cluster (`--dask local`: a scheduler
and two one-thread workers started here on loopback, stopped by pid) and prints where each fit
ran (the report's `cluster` section).

Run: /tmp/venv/bin/python benchmarks/retrain.py [--samples 100000] [--runs 1] [--dask ADDR]
     /tmp/venv/bin/python benchmarks/retrain.py --busy [--samples 30000] [--rounds 2]
     /tmp/venv/bin/python benchmarks/retrain.py --refit [--samples 100000] [--runs 1]
Results go to docs/benchmarks.md (sections "Retrain", "Retrain beside a busy consumer" and
"The refit").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from dask_local import cluster_address

from consumers.broker import EmbeddedBroker
from consumers.replay import ensure_topic, synthetic_events
from daemon.config import Config, KafkaConfig, MetricsConfig, StoreConfig
from daemon.config.runtime import RetrainProcessConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.monitor.metrics import Metrics
from daemon.pipeline.engine import history_rows
from daemon.runtime.ingest import ingest_consumer
from daemon.runtime.retrain_runner import RetrainRunner, RunResult
from daemon.store.sqlite import Store
from daemon.training.archive import build_archive
from daemon.training.threads import THREAD_COUNT_VARIABLES, WAIT_POLICY
from daemon.training.trainer import retrain

#: The models whose fits run on OpenMP threads.
OPENMP_MODELS = ("xgboost", "lightgbm", "gradient_boosting")


def build_store(path: Path, samples: int) -> int:
    """Fill a store at `path` with about `samples` labelled samples; the count written."""
    config = Config().replace(store=StoreConfig(path=str(path)))
    vix = read_vix_csv(bundled_path("vix"))
    total = 0
    with Store.open(config.store) as store:
        for name, symbol in (("sp500", "^GSPC"), ("nasdaq", "^IXIC")):
            bars, rows = history_rows(config, symbol, read_bars_csv(bundled_path(name)), vix)
            store.write_batch(bars=bars, samples=rows)
            total += sum(r.label is not None for r in rows)
        total += build_archive(config, store, "bundled").total
        missing = max(samples - total, 0)
        n_days = 5000
        per_symbol = n_days - 199 - config.label.horizon_bars
        n_symbols = -(-missing // per_symbol)
        if n_symbols:
            frames: dict[str, list[tuple[Any, ...]]] = {}
            synthetic_vix: dict[Any, float] = {}
            for e in synthetic_events(n_symbols, n_days=n_days, seed=1):
                if e.symbol == "^VIX":
                    synthetic_vix[e.ts] = e.close
                else:
                    frames.setdefault(e.symbol, []).append(
                        (e.ts, e.open, e.high, e.low, e.close, e.volume)
                    )
            vix_series = pd.Series(synthetic_vix, dtype=float)
            vix_series.index = pd.DatetimeIndex(vix_series.index)
            for symbol, rows_ in frames.items():
                frame = pd.DataFrame(
                    rows_, columns=["ts", "open", "high", "low", "close", "volume"]
                ).set_index("ts")
                frame.index = pd.DatetimeIndex(frame.index)
                bars, rows = history_rows(config, symbol, frame, vix_series)
                store.write_batch(bars=bars, samples=rows)
                total += sum(r.label is not None for r in rows)
    return total


class OldPolicyRunner(RetrainRunner):
    """The retrain process as it was started before the thread policy: the daemon's own
    environment (OpenMP's default wait policy, no thread caps); the configuration sets n_jobs."""

    def environment(self, n_jobs: int) -> dict[str, str]:
        policy = {*THREAD_COUNT_VARIABLES, *WAIT_POLICY}
        return {k: v for k, v in os.environ.items() if k not in policy}


class Ingest:
    """The daemon's consumer, consuming in a thread until `stop`; `stored` counts the bars."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.stored = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest")

    def _run(self) -> None:
        try:
            with Store.open(self.config.store) as store:
                consumer = ingest_consumer(self.config, store, Metrics.create(), self.stopping)
                consumer.open()
                try:
                    while not self.stopping.is_set():
                        self.stored += consumer.run(max_messages=5_000, timeout_s=1).stored_bars
                finally:
                    consumer.close(commit=True)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def wait_for_bars(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.stored == 0:
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the consumer stored nothing in {timeout_s:.0f} s: {self.error}"
                )
            time.sleep(0.5)


@contextmanager
def busy_ingest(work: Path, timeout_s: float) -> Iterator[Ingest]:
    """An embedded broker, `regimed replay --synthetic` publishing into it as fast as it can,
    and the daemon's consumer (and writer process) storing what comes."""
    suffix = uuid.uuid4().hex[:8]
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        kafka = KafkaConfig(
            bootstrap_servers=(broker.bootstrap,),
            topic=f"bench-{suffix}",
            group_id=f"bench-{suffix}",
        )
        ensure_topic(kafka, kafka.topic, 1)
        ensure_topic(kafka, kafka.effective_dlq_topic, 1)
        env = {**os.environ, "REGIMED_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
        replay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon",
                "replay",
                "--synthetic",
                "500",
                "--days",
                "50000",
                "--topic",
                kafka.topic,
                "--quiet",
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        config = Config(
            kafka=kafka,
            store=StoreConfig(path=str(work / "ingest.db")),
            metrics=MetricsConfig(port=0),
        )
        ingest = Ingest(config)
        ingest.thread.start()
        try:
            ingest.wait_for_bars(timeout_s)
            yield ingest
        finally:
            ingest.stopping.set()
            ingest.thread.join(timeout_s)
            replay.terminate()
            replay.wait(timeout_s)
    if ingest.error is not None:
        raise ingest.error


def timed_retrain(
    variant: str, store: Path, work: Path, ingest: Ingest | None, timeout_s: float
) -> tuple[RunResult, float, float | None]:
    """One retrain in the retrain process on a fresh copy of `store`: (result, seconds, bars
    stored per second meanwhile)."""
    run_dir = work / f"run-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir()
    shutil.copy(store, run_dir / "regimed.db")
    config = Config().replace(store=StoreConfig(path=str(run_dir / "regimed.db")))
    process = RetrainProcessConfig(timeout_seconds=timeout_s)
    if variant == "old":
        training = dataclasses.replace(config.training, n_jobs=2)
        runner: RetrainRunner = OldPolicyRunner(config.replace(training=training), process=process)
    elif variant == "new, n_jobs 2":
        training = dataclasses.replace(config.training, n_jobs=2)
        runner = RetrainRunner(config.replace(training=training), process=process)
    else:
        runner = RetrainRunner(config, process=process)
    before = ingest.stored if ingest is not None else 0
    t = time.perf_counter()
    result = runner.run("manual")
    seconds = time.perf_counter() - t
    rate = None if ingest is None else (ingest.stored - before) / seconds
    shutil.rmtree(run_dir)
    return result, seconds, rate


def busy(store: Path, work: Path, rounds: int, timeout_s: float) -> None:
    """Retrains with the old and the current thread policy, quiet and beside a busy ingest."""
    names = {
        "old": "old: environment as is, n_jobs 2",
        "new": 'new: thread policy, n_jobs "auto"',
        "new, n_jobs 2": "thread policy, n_jobs 2",
    }
    models = " | ".join(f"{m} fit s" for m in OPENMP_MODELS)
    print(f"\n| load | thread policy | retrain s | {models} | bars stored/s meanwhile |")
    print("|---|---|---:|" + "---:|" * len(OPENMP_MODELS) + "---:|")

    def row(load: str, variant: str, ingest: Ingest | None) -> None:
        result, seconds, rate = timed_retrain(variant, store, work, ingest, timeout_s)
        if result.outcome not in ("promoted", "rejected"):
            raise RuntimeError(f"retrain {result.outcome}: {result.reason}")
        validation = result.report.validation if result.report is not None else None
        fits = validation.models if validation is not None else {}
        cells = " | ".join(
            f"{(fits[m].fit_seconds if m in fits else None) or 0:.1f}" for m in OPENMP_MODELS
        )
        meanwhile = "-" if rate is None else f"{rate:,.0f}"
        load_now = f"{load}, load {os.getloadavg()[0]:.1f}"
        print(
            f"| {load_now} | {names[variant]} | {seconds:.1f} | {cells} | {meanwhile} |", flush=True
        )

    for variant in ("old", "new"):
        row("no ingest", variant, None)
    with busy_ingest(work, timeout_s) as ingest:
        for _ in range(rounds):
            for variant in ("old", "new", "new, n_jobs 2"):
                row("busy ingest", variant, ingest)


def refit_runs(store: Path, work: Path, runs: int) -> None:
    """Retrains without and with the refit on fresh copies of `store`, promoted whatever they
    show: time, refit fit time and bundle size of each."""
    print("\n| training.refit | retrain s | refit fit s | bundle MB | served members saw |")
    print("|---|---:|---:|---:|---|")
    for _ in range(runs):
        for refit in (False, True):
            run_dir = work / f"refit-{uuid.uuid4().hex[:8]}"
            run_dir.mkdir()
            shutil.copy(store, run_dir / "regimed.db")
            config = Config().replace(store=StoreConfig(path=str(run_dir / "regimed.db")))
            config = config.replace(
                training=dataclasses.replace(config.training, refit=refit),
                gate=dataclasses.replace(config.gate, min_edge=-1.0),
            )
            t = time.perf_counter()
            report = retrain(config, trigger="manual")
            seconds = time.perf_counter() - t
            if not report.promoted or report.artifact is None or report.windows is None:
                raise RuntimeError(f"the candidate was not promoted: {report.reason}")
            bundle = Path(str(report.artifact.path))
            size = sum(f.stat().st_size for f in bundle.iterdir()) / 1e6
            windows = report.windows
            seen = windows.refit if windows.refit is not None else windows.fit
            refit_s = sum(v or 0.0 for v in windows.refit_fit_seconds.values())
            span = "-" if seen is None else f"{seen.first}..{seen.last} ({seen.rows or 0:,} rows)"
            print(
                f"| {str(refit).lower()} | {seconds:.1f} | {refit_s:.1f} | {size:.1f} | {span} |",
                flush=True,
            )
            shutil.rmtree(run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="default 100,000; --busy 30,000")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--busy",
        action="store_true",
        help="instead: retrains in the retrain process, old and current thread policy, "
        "quiet and beside a busy ingest",
    )
    parser.add_argument("--rounds", type=int, default=2, help="--busy: rounds of old and new")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="instead: retrains without and with the refit of the promoted members",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="--busy: bound of a retrain (s)"
    )
    parser.add_argument(
        "--dask",
        default="",
        help="fit on this Dask scheduler (tcp://host:port), or `local`: a scheduler and two "
        "one-thread workers started here",
    )
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 30_000 if args.busy else 100_000
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        path = Path(tmp) / "regimed.db"
        t = time.perf_counter()
        total = build_store(path, args.samples)
        print(f"store: {total:,} labelled samples built in {time.perf_counter() - t:.0f} s")
        config = Config().replace(store=StoreConfig(path=str(path)))
        print(f"python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cpus")
        if args.busy:
            busy(path, Path(tmp), args.rounds, args.timeout)
            return 0
        if args.refit:
            refit_runs(path, Path(tmp), args.runs)
            return 0
        if args.dask:
            address = stack.enter_context(cluster_address(args.dask))
            config = config.replace(
                training=dataclasses.replace(config.training, dask_scheduler=address)
            )
        stages: dict[str, float] = {}
        last = [time.perf_counter(), "start"]

        def progress(event: str, details: Mapping[str, Any]) -> None:
            if event == "stage":
                now = time.perf_counter()
                stages[str(last[1])] = stages.get(str(last[1]), 0.0) + now - float(last[0])
                last[0], last[1] = now, details["stage"]

        for run in range(args.runs):
            t = time.perf_counter()
            report = retrain(config, trigger="manual", progress=progress).to_json()
            elapsed = time.perf_counter() - t
            models = report["validation"]["models"]
            print(
                f"\nrun {run + 1}: {elapsed:.1f} s in all (report: "
                f"{report['duration_seconds']:.1f} s), promoted {report['promoted']}"
            )
            fit_rows = sum(report["training"]["regime_counts_after"].values())
            print(
                f"fit rows after sampling: {fit_rows:,}; "
                f"validation rows {report['split']['validation_rows']:,}"
            )
            print("\n| model | fit s | validation balanced accuracy | accuracy |")
            print("| --- | ---: | ---: | ---: |")
            for name, cell in models.items():
                fit = cell.get("fit_seconds")
                print(
                    f"| {name} | {'-' if fit is None else f'{fit:.1f}'} | "
                    f"{cell['balanced_accuracy']:.3f} | {cell['accuracy']:.3f} |"
                )
            print("\nstages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
            if "cluster" in report:
                cluster = report["cluster"]
                print(
                    f"\ncluster {cluster['scheduler']}: {cluster['workers']} workers, "
                    f"{cluster['threads']} threads"
                )
                for fit in cluster["fits"]:
                    where = fit.get("worker") or ", ".join(fit.get("workers") or [])
                    print(
                        f"  {fit['stage']} {fit['model']} ({fit.get('how', 'task')}) on "
                        f"{where}: {fit['seconds']} s"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
