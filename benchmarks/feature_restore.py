"""Benchmark the start-up rebuild of the per-event feature state: restore against replay.

Builds S synthetic symbols x B daily bars (random-walk OHLCV, a shared VIX with gaps, regimes
with an undecided start) and times, over the same histories:

* `SymbolFeatures.restore(bars, vix, vix_is_proxy, regimes)` once per symbol (the start-up
  path, from the DataFrame a store read gives);
* feeding every bar to `SymbolFeatures.update`, the only way before restore (the bars already
  turned into Python floats, so only the feature work is timed).

Checks that both give the same state (the next bar's row bit for bit) before timing. The
SQLite read (`Store.last_bars`) is timed separately by benchmarks/store_read.py.

Run: /tmp/venv/bin/python benchmarks/feature_restore.py [--symbols S] [--bars B] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from daemon.domain import REGIMES
from daemon.pipeline.features import SymbolFeatures

History = tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str | None]]
#: One bar as the consumer hands it to `update`: OHLCV, VIX, proxy flag, regime.
Row = tuple[float, float, float, float, float, float, bool, str | None]


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def histories(symbols: int, bars: int, seed: int) -> list[History]:
    """Random-walk OHLCV per symbol; one VIX series (with a few gaps) shared by all."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2024-01-02", periods=bars, name="date")
    vix = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, bars)))
    vix[rng.choice(bars, size=min(3, bars), replace=False)] = np.nan
    proxy = np.zeros(bars, dtype=bool)
    proxy[: bars // 3] = True
    out = []
    for _ in range(symbols):
        close = rng.uniform(5.0, 500.0) * np.exp(np.cumsum(rng.normal(0.0, 0.015, bars)))
        open_ = np.concatenate([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, 0.004, bars))
        high = np.maximum(open_, close) * np.exp(rng.exponential(0.006, bars))
        low = np.minimum(open_, close) * np.exp(-rng.exponential(0.006, bars))
        volume = np.round(rng.lognormal(13.0, 0.6, bars))
        frame = pd.DataFrame(
            {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
            index=days,
        )
        regimes: list[str | None] = [str(r) for r in rng.choice(REGIMES, bars)]
        regimes[:21] = [None] * min(21, bars)
        out.append((frame, vix, proxy, regimes))
    return out


def as_rows(h: History) -> list[Row]:
    """The bars of one history as the consumer hands them to `update`."""
    frame, vix, proxy, regimes = h
    o, hi, lo, c, v = (frame[col].tolist() for col in ("open", "high", "low", "close", "volume"))
    return list(zip(o, hi, lo, c, v, vix.tolist(), proxy.tolist(), regimes, strict=True))


def restore_all(hs: list[History]) -> list[SymbolFeatures]:
    return [SymbolFeatures.restore(*h) for h in hs]


def replay_all(rows: list[list[Row]]) -> list[SymbolFeatures]:
    states = []
    for symbol_rows in rows:
        state = SymbolFeatures()
        update = state.update
        for row in symbol_rows:
            update(*row)
        states.append(state)
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--bars", type=int, default=300, help="bars per symbol (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs each (best, median)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, pandas {pd.__version__}; "
        f"{args.symbols:,} symbols x {args.bars:,} bars"
    )
    hs = histories(args.symbols, args.bars, args.seed)
    rows = [as_rows(h) for h in hs]

    # The same state: the same counters, and the same row, bit for bit, for a next bar (the
    # last one again) on every symbol.
    for restored, replayed, symbol_rows in zip(
        restore_all(hs), replay_all(rows), rows, strict=True
    ):
        assert (restored.bars, restored.withheld) == (replayed.bars, replayed.withheld)
        a, b = restored.update(*symbol_rows[-1]), replayed.update(*symbol_rows[-1])
        same = np.array_equal(a, b) if a is not None and b is not None else a is b
        assert same, "restore and replay disagree"
    print("restore and replay give the same state on every symbol")

    total = args.symbols * args.bars
    results = []
    for name, fn in (
        ("SymbolFeatures.restore, once per symbol", lambda: restore_all(hs)),
        ("SymbolFeatures.update, once per bar", lambda: replay_all(rows)),
    ):
        best, median = timed(fn, args.repeat)
        results.append((name, best, median))

    print()
    print(f"| rebuild of {args.symbols:,} x {args.bars:,} bars | best s | median s | µs per bar |")
    print("|---|---:|---:|---:|")
    for name, best, median in results:
        print(f"| {name} | {best:.2f} | {median:.2f} | {best / total * 1e6:.2f} |")
    print()
    print(f"restore is {results[1][1] / results[0][1]:.1f}x faster than replay (best times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
