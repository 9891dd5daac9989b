"""Benchmark the restart: per-symbol state rebuilt from SQLite, as the consumer rebuilds it.

Builds a store the way the daemon fills it: `synthetic_events(S symbols, B days)` through
`Pipeline.process` and `Store.write_batch` (so bars carry their regimes, samples their pending
labels). Then, in a fresh `Store` and `Pipeline` (a restarted daemon), times:

* `Pipeline.load_vix(store.bars(symbol="^VIX"))`, done once when the consumer opens;
* for every symbol, what the consumer does when the symbol's first bar arrives:
  `store.recent_bars(symbol, RESTORE_BARS)` (the SQLite read, into a DataFrame) and
  `Pipeline.restore` (regime episode, feature windows and recursive averages, pending labels).

Before timing, it checks that the restored pipeline turns the next day's bars into the same
rows, bit for bit, as the pipeline that never stopped.

Run: /tmp/venv/bin/python benchmarks/restore.py [--symbols 1000] [--bars 300] [--repeat 3]
Results go to docs/benchmarks.md (section "Restart").
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from consumers.replay import synthetic_events
from daemon.config import Config
from daemon.domain import Bar
from daemon.pipeline.engine import Output, Pipeline
from daemon.runtime.ingest import RESTORE_BARS
from daemon.store.sqlite import Store

BATCH = 10_000


def build(path: Path, config: Config, events: list[Bar]) -> Pipeline:
    """Fill a store through the pipeline, a batch per transaction; returns the live pipeline."""
    pipeline = Pipeline(config)
    with Store(path) as store:
        for first in range(0, len(events), BATCH):
            out = Output()
            for bar in events[first : first + BATCH]:
                pipeline.process(bar, out)
            store.write_batch(bars=out.bars, samples=out.samples, labels=out.labels)
    return pipeline


def restore_all(
    path: Path, config: Config, symbols: list[str]
) -> tuple[Pipeline, dict[str, float]]:
    """A restarted daemon's rebuild of every symbol; returns it and the seconds per step."""
    times = {"open": 0.0, "load_vix": 0.0, "read": 0.0, "restore": 0.0}
    start = time.perf_counter()
    store = Store(path)
    pipeline = Pipeline(config, history=lambda s: store.recent_bars(s, RESTORE_BARS))
    times["open"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        pipeline.load_vix(store.bars(symbol=config.regime.vix_symbol))
        times["load_vix"] = time.perf_counter() - start
        for symbol in symbols:
            start = time.perf_counter()
            stored = store.recent_bars(symbol, RESTORE_BARS)
            read = time.perf_counter()
            pipeline.restore(symbol, stored)
            times["read"] += read - start
            times["restore"] += time.perf_counter() - read
    finally:
        store.close()
    return pipeline, times


def same_next_rows(a: Pipeline, b: Pipeline, bars: list[Bar]) -> bool:
    """Both pipelines turn `bars` into the same bar rows, samples (bit for bit) and labels."""
    out_a, out_b = Output(), Output()
    for bar in bars:
        a.process(bar, out_a)
        b.process(bar, out_b)
    return (
        out_a.bars == out_b.bars
        and out_a.labels == out_b.labels
        and len(out_a.samples) == len(out_b.samples)
        and all(
            (x.symbol, x.ts, x.regime, x.features.tobytes())
            == (y.symbol, y.ts, y.regime, y.features.tobytes())
            for x, y in zip(out_a.samples, out_b.samples, strict=True)
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--bars", type=int, default=300, help="stored bars per symbol")
    parser.add_argument("--repeat", type=int, default=3, help="timed restarts (best, median)")
    args = parser.parse_args(argv)

    config = Config()
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"NumPy {np.__version__}, pandas {pd.__version__}"
    )
    events = list(synthetic_events(args.symbols, args.bars + 1))
    stored, following = events[: -(args.symbols + 1)], events[-(args.symbols + 1) :]
    symbols = sorted({e.symbol for e in stored} - {config.regime.vix_symbol})
    with tempfile.TemporaryDirectory(prefix="regimed-bench-") as tmp:
        path = Path(tmp) / "restore.db"
        start = time.perf_counter()
        live = build(path, config, stored)
        print(
            f"# store: {len(symbols):,} symbols x {args.bars:,} bars + ^VIX "
            f"({len(stored):,} bars, {path.stat().st_size / 2**20:.0f} MiB) built through the "
            f"pipeline in {time.perf_counter() - start:.0f} s; RESTORE_BARS = {RESTORE_BARS}"
        )
        restored, _ = restore_all(path, config, symbols)
        assert restored.restored == len(symbols)
        assert same_next_rows(live, restored, following), "restored state differs"
        print("the restored pipeline gives the next day's rows bit for bit")

        runs = [restore_all(path, config, symbols)[1] for _ in range(args.repeat)]

    totals = [sum(t.values()) for t in runs]
    print()
    print(f"| restart with {len(symbols):,} symbols x {args.bars:,} bars | best s | median s |")
    print("|---|---:|---:|")
    for name, what in (
        ("open", "open the store"),
        ("load_vix", "load the VIX history"),
        ("read", "`recent_bars`: SQLite read into a DataFrame, per symbol"),
        ("restore", "`Pipeline.restore`: regime, features, labels, per symbol"),
    ):
        values = [t[name] for t in runs]
        print(f"| {what} | {min(values):.2f} | {statistics.median(values):.2f} |")
    print(f"| **total** | **{min(totals):.2f}** | **{statistics.median(totals):.2f}** |")
    print(f"# load at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
