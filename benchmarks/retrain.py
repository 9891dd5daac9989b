"""Benchmark a full retrain (load from SQLite, split, sample, weight, fit the base models and the
ensemble, validate, gate, write the artifact) on about 100,000 samples.

The store holds the bundled S&P 500 and NASDAQ history as live samples, the bundled archive, and
enough synthetic regime-switching symbols (`regimed replay --synthetic`'s generator, through the
same batch feature and label code) to reach `--samples`. The store is built once into a
temporary directory (not timed); then `regimed retrain`'s code path runs with the default
configuration and prints the time of each stage and each model.

Run: /tmp/venv/bin/python benchmarks/retrain.py [--samples 100000] [--runs 1]
Results go to docs/benchmarks.md (section "Retrain").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from consumers.replay import synthetic_events
from daemon.archive import build_archive
from daemon.config import Config, StoreConfig
from daemon.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.pipeline import history_rows
from daemon.store import Store
from daemon.training.trainer import retrain


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "regimed.db"
        t = time.perf_counter()
        total = build_store(path, args.samples)
        print(f"store: {total:,} labelled samples built in {time.perf_counter() - t:.0f} s")
        config = Config().replace(store=StoreConfig(path=str(path)))
        print(f"python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cpus")
        stages: dict[str, float] = {}
        last = [time.perf_counter(), "start"]

        def progress(event: str, details: Mapping[str, Any]) -> None:
            if event == "stage":
                now = time.perf_counter()
                stages[str(last[1])] = stages.get(str(last[1]), 0.0) + now - float(last[0])
                last[0], last[1] = now, details["stage"]

        for run in range(args.runs):
            t = time.perf_counter()
            report = retrain(config, trigger="manual", progress=progress)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
