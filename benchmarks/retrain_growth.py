"""How the base models' fit time grows with the training rows, on this machine and on a Dask
cluster, and what a 25-million-sample store would need.

The rows are `retrain_models.py`'s: the bundled S&P 500 and NASDAQ histories through the batch
feature code, the training part drawn up to each size with the trainer's regime-balanced sampler
and 1% noise, the default regime loss weights. For each size every model of
`training.models` is fitted the way a retrain fits it (`daemon.training.fitting.fit_all`):

* `local`: in this process, `training.n_jobs` threads (default 2, this machine's cores); the
  table gives each fit's wall seconds and the CPU seconds this process spent on it (all its
  threads; less sensitive than wall time to other work on a shared machine).
* `--dask ADDR` (or `--dask local`: a scheduler and two one-thread workers started here on
  loopback and stopped by pid): on that cluster through `daemon.training.cluster`, the rows sent
  once per size and each model a task; the table gives each fit's seconds on its worker and
  the wall time of all the fits of a size.

Then, per model and place, the exponent b of time ~ samples^b (least squares on the logs) and
the time 25,000,000 samples would take, t(largest) x (25e6 / largest)^b.

Run: .venv/bin/python benchmarks/retrain_growth.py [--samples 100000,400000,1000000]
     [--dask local|tcp://host:port] [--no-local] [--models a,b,...] [--json out.json]
     .venv/bin/python benchmarks/retrain_growth.py --summary local.json dask.json
Results go to docs/benchmarks.md ("Retrain: growth with the samples").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.training.threads import thread_environment

# The thread caps and wait policy a retrain process runs with, before the numeric libraries load.
os.environ.update(thread_environment(2, {}))

import numpy as np
from dask_local import cluster_address
from retrain_models import real_rows, training_rows

from daemon.config import Config
from daemon.config.training import MODEL_NAMES
from daemon.training.cluster import open_cluster
from daemon.training.fitting import fit_all

TARGET = 25_000_000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Fit:
    place: str
    samples: int
    model: str
    seconds: float
    cpu: float | None


def fit_local(config: Config, X: Any, y: Any, w: Any, n: int) -> list[Fit]:
    fits: list[Fit] = []
    marks: dict[str, float] = {}

    def progress(event: str, details: Mapping[str, Any]) -> None:
        if event == "model_started":
            marks[details["model"]] = cpu_seconds()
        elif event == "model_finished":
            name = details["model"]
            cpu = cpu_seconds() - marks[name]
            fits.append(Fit("local", n, name, details["seconds"], cpu))
            print(
                f"  local {n:>9,} {name:<20} {details['seconds']:8.1f} s, CPU {cpu:8.1f} s",
                flush=True,
            )

    fit_all(config, X, y, w, progress)
    return fits


def fit_cluster(config: Config, X: Any, y: Any, w: Any, n: int) -> tuple[list[Fit], float, float]:
    """The fits of one size on the cluster, the wall time of them all and the CPU seconds the
    workers spent meanwhile (sending the rows included)."""
    with open_cluster(config) as cluster:
        if cluster is None or cluster.client is None:
            raise SystemExit(f"no cluster at {config.training.dask_scheduler}")
        before = cluster.client.run(cpu_seconds)
        started = time.perf_counter()
        _, seconds, _ = fit_all(config, X, y, w, lambda e, d: None, cluster=cluster)
        wall = time.perf_counter() - started
        after = cluster.client.run(cpu_seconds)
    cpu = sum(after[k] - before.get(k, 0.0) for k in after)
    fits = [Fit("dask", n, name, s, None) for name, s in seconds.items()]
    for f in fits:
        print(f"  dask  {n:>9,} {f.model:<20} {f.seconds:8.1f} s", flush=True)
    print(f"  dask  {n:>9,} all fits, wall {wall:.1f} s, workers' CPU {cpu:.1f} s", flush=True)
    return fits, wall, cpu


def save(path: Path, fits: list[Fit], walls: dict[int, float], cpu: dict[int, float]) -> None:
    doc = {"fits": [dataclasses.asdict(f) for f in fits], "dask_walls": walls, "dask_cpu": cpu}
    path.write_text(json.dumps(doc, indent=1))


def exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    xs = np.log([p[0] for p in points])
    ys = np.log([max(p[1], 1e-3) for p in points])
    return float(np.polyfit(xs, ys, 1)[0])


def summary(fits: list[Fit], sizes: list[int], names: list[str]) -> None:
    places = sorted({f.place for f in fits}, key=["local", "dask"].index)
    largest = max(sizes)
    for place in places:
        unit = (
            "wall s / CPU s"
            if place == "local"
            else "s of each fit on the cluster: a task on its worker; a booster or a forest "
            "spread over the workers, beside the tasks"
        )
        hours = "CPU h" if place == "local" else "h"
        print(f"\n{place}: fit time by samples ({unit})\n")
        head = " | ".join(f"{n:,}" for n in sizes)
        print(f"| model | {head} | b | {TARGET / 1e6:.0f}M samples, {hours} |")
        print("|---|" + "---:|" * (len(sizes) + 2))
        totals = {n: 0.0 for n in sizes}
        for name in names:
            cells, points = [], []
            for n in sizes:
                got = [f for f in fits if (f.place, f.samples, f.model) == (place, n, name)]
                if not got:
                    cells.append("-")
                    continue
                f = got[0]
                totals[n] += f.seconds
                cells.append(f"{f.seconds:.1f}" + (f" / {f.cpu:.1f}" if f.cpu is not None else ""))
                # local: the exponent of the CPU seconds, which other work on the machine
                # disturbs less than the wall time
                points.append((n, f.cpu if f.cpu is not None else f.seconds))
            b = exponent(points)
            at = dict(points).get(largest)
            guess = (
                at * (TARGET / largest) ** b / 3600 if b is not None and at is not None else None
            )
            print(
                f"| {name} | {' | '.join(cells)} | {'-' if b is None else f'{b:.2f}'} | "
                f"{'-' if guess is None else f'{guess:.2f}'} |"
            )
        print(f"| **all** | {' | '.join(f'{totals[n]:.1f}' for n in sizes)} | | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="100000,400000,1000000")
    parser.add_argument("--dask", default="", help="local, or tcp://host:port")
    parser.add_argument("--no-local", action="store_true", help="only the cluster")
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--rf-max-samples",
        type=float,
        default=None,
        help="models.random_forest.max_samples (default 0.2): the share of rows each tree draws",
    )
    parser.add_argument("--json", default="", help="also write every fit to this file")
    parser.add_argument(
        "--summary",
        nargs="+",
        default=[],
        metavar="JSON",
        help="instead: the tables of earlier runs' --json files (e.g. a local and a cluster run)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.samples.split(",")]
    names = args.models.split(",")
    if args.summary:
        docs = [json.loads(Path(p).read_text()) for p in args.summary]
        saved = [Fit(**f) for doc in docs for f in doc["fits"] if f["samples"] in sizes]
        summary(saved, sizes, names)
        for doc in docs:
            for n, wall in doc["dask_walls"].items():
                print(
                    f"dask, {int(n):,}: wall {wall:.1f} s, workers' CPU {doc['dask_cpu'][n]:.1f} s"
                )
        return 0
    config = Config()
    config = config.replace(
        training=dataclasses.replace(config.training, models=tuple(names), n_jobs=args.n_jobs)
    )
    if args.rf_max_samples is not None:
        forest = dataclasses.replace(config.models.random_forest, max_samples=args.rf_max_samples)
        config = config.replace(models=dataclasses.replace(config.models, random_forest=forest))
    train, _ = real_rows(config)
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.2f}; {len(train.y):,} real training rows drawn up to {sizes}",
        flush=True,
    )
    fits: list[Fit] = []
    walls: dict[int, float] = {}
    worker_cpu: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        if args.dask:
            address = stack.enter_context(cluster_address(args.dask))
            on_cluster = config.replace(
                training=dataclasses.replace(config.training, dask_scheduler=address)
            )
            # The workers import the libraries on their first fit: not part of any size.
            small, small_w = training_rows(train, config, 2000)
            fit_cluster(on_cluster, small.X, small.y, small_w, 0)
        for n in sizes:
            drawn, weights = training_rows(train, config, n)
            if not args.no_local:
                fits += fit_local(config, drawn.X, drawn.y, weights, n)
            if args.dask:
                got, walls[n], worker_cpu[n] = fit_cluster(on_cluster, drawn.X, drawn.y, weights, n)
                fits += got
            print(f"  load {os.getloadavg()[0]:.2f}", flush=True)
            if args.json:  # after every size, so an interrupted run keeps what it measured
                save(Path(args.json), fits, walls, worker_cpu)
    summary(fits, sizes, names)
    if walls:
        print(
            "\ndask, all fits of a size: "
            + ", ".join(
                f"{n:,}: wall {s:.1f} s, workers' CPU {worker_cpu[n]:.1f} s"
                for n, s in walls.items()
            )
        )
    return 0 if all(math.isfinite(f.seconds) for f in fits) else 1


if __name__ == "__main__":
    sys.exit(main())
