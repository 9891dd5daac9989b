"""Benchmark the daemon's start-up integrity check (`store.quick_check_seconds`).

Builds, in a temporary directory, the store the bundled replay leaves behind (the bundled S&P 500
and NASDAQ history as bars and live samples, plus the bundled rare-event archive), then grows it
by copies of its bars and samples under other symbols, and times at each size:

* `PRAGMA quick_check` run whole (its cost grows with the file: it reads every page);
* the start-up check as the daemon runs it (`Store(..., quick_check_seconds=S)`), which stops
  after S seconds on a store too large for the budget.

The page cache is warm (the file was just written); a cold read from disk adds the time to
read the file once.

Run: .venv/bin/python benchmarks/quick_check.py [--copies 0 10 100] [--budget 10]
Results go to docs/operations.md (section "Store hygiene").
"""

from __future__ import annotations

import argparse
import logging
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from daemon.config import Config, StoreConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.pipeline.engine import history_rows
from daemon.store.sqlite import Store
from daemon.training.archive import build_archive


def build_bundled(path: Path) -> None:
    """The bundled replay's store: both indexes as bars and live samples, and the archive."""
    config = Config().replace(store=StoreConfig(path=str(path)))
    vix = read_vix_csv(bundled_path("vix"))
    with Store.open(config.store) as store:
        for symbol, name in (("^GSPC", "sp500"), ("^IXIC", "nasdaq")):
            bars, samples = history_rows(config, symbol, read_bars_csv(bundled_path(name)), vix)
            store.write_batch(bars=bars, samples=samples)
        build_archive(config, store, "bundled")


def grow(path: Path, copies: int, done: int) -> None:
    """Add copies `done`..`copies - 1` of the original bars and samples under new symbols."""
    conn = sqlite3.connect(path)
    with conn:
        for k in range(done, copies):
            conn.execute(
                "INSERT INTO bars SELECT symbol || ?, ts, open, high, low, close, volume, "
                "regime, vix, vix_source FROM bars WHERE symbol IN ('^GSPC', '^IXIC')",
                (f"#{k}",),
            )
            conn.execute(
                "INSERT INTO samples SELECT source, symbol || ?, ts, regime, weight, label, "
                "event, feature_version, features FROM samples WHERE symbol IN "
                "('^GSPC', '^IXIC')",
                (f"#{k}",),
            )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[0, 10, 100])
    parser.add_argument("--budget", type=float, default=10.0, help="store.quick_check_seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    print(f"# {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "regimed.db"
        build_bundled(path)
        done = 0
        for copies in sorted(args.copies):
            grow(path, copies, done)
            done = max(done, copies)
            size = path.stat().st_size / 1e6
            conn = sqlite3.connect(path)
            start = time.perf_counter()
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            whole = time.perf_counter() - start
            conn.close()
            print(f"{copies:>4} copies, {size:8.1f} MB: quick_check {whole:7.3f} s ({result})")
            start = time.perf_counter()
            Store(path, quick_check_seconds=args.budget).close()
            print(f"{'':>24} start-up check: {time.perf_counter() - start:7.3f} s")


if __name__ == "__main__":
    main()
