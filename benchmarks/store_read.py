"""Benchmark the store's feature layout, its start-up read and its commit cost.

Builds temporary databases and times:

* reading N samples x F features into a NumPy matrix with the two candidate layouts: one
  float32 BLOB per sample (read row by row, joined, one `numpy.frombuffer`) and one REAL
  column per feature (read row by row into `numpy.array`);
* `Store.read_samples()`, the store's real path (meta DataFrame + matrix, aggregated in SQLite
  per (source, symbol));
* `Store.last_bars(300)` over S symbols x B bars (the start-up rebuild);
* `Store.write_batch` of 500 bars + 500 samples + offsets, and of offsets alone (the
  commit and its fsync), with synchronous=FULL and NORMAL.

With `--memory` it measures instead how much memory `Store.read_samples()` takes: the same N
samples written to an SQLite file and to a PostgreSQL database (a throw-away server started by
`tests/postgres_server.py`), each read once in a fresh process that reports its resident set
before the read, its peak during the read (Linux: `VmHWM`, reset just before) and after it, and
the size of what the read returned (and the read's time, one run).

Run: /tmp/venv/bin/python benchmarks/store_read.py [--rows N] [--repeat R] [--memory]
Results go to docs/benchmarks.md (section "Store").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from daemon.domain import REGIMES, BarRow, SampleRow
from daemon.store.sqlite import SYNCHRONOUS, Store

BASE_DAY = dt.date(1990, 1, 1)
ROOT = Path(__file__).resolve().parents[1]

#: Run in a fresh process by `read_memory`: open the store, reset the peak resident set
#: (Linux: `/proc/self/clear_refs`), read every labelled sample, print the resident set before,
#: its peak during the read and after it (KiB), and the bytes of what the read returned.
_READ_PEAK = """
import json, sys, time
from daemon.store.postgres import PostgresStore
from daemon.store.sqlite import Store
def kib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))
url, path = sys.argv[1], sys.argv[2]
store = PostgresStore(url, path=path) if url else Store(path, read_only=True)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = kib("VmRSS")
start = time.perf_counter()
meta, X = store.read_samples()
took = time.perf_counter() - start
print(json.dumps({"seconds": took, "before_kib": before, "peak_kib": kib("VmHWM"),
                  "after_kib": kib("VmRSS"), "rows": len(meta), "x_bytes": X.nbytes,
                  "meta_bytes": int(meta.memory_usage(deep=True).sum())}))
"""


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def sample_rows(rows: int, features: int, symbols: int, seed: int) -> Iterator[list[SampleRow]]:
    """Labelled samples in chunks: 90% live, 10% archive (with an event name)."""
    rng = np.random.default_rng(seed)
    per_symbol = -(-rows // symbols)
    chunk: list[SampleRow] = []
    for i in range(rows):
        symbol, day = divmod(i, per_symbol)
        archive = day % 10 == 0
        chunk.append(
            SampleRow(
                symbol=f"S{symbol:04d}",
                ts=(BASE_DAY + dt.timedelta(days=day)).isoformat(),
                source="archive" if archive else "live",
                regime=REGIMES[i % len(REGIMES)],
                weight=1.0 + (i % 5) / 10,
                label=i % 2,
                features=rng.standard_normal(features).astype(np.float32),
                feature_version=1,
                event="2008 Financial Crisis" if archive else None,
            )
        )
        if len(chunk) == 20_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_blob(path: Path, rows: int, features: int, symbols: int) -> float:
    start = time.perf_counter()
    with Store(path) as store:
        for chunk in sample_rows(rows, features, symbols, seed=1):
            store.write_batch(samples=chunk)
    return time.perf_counter() - start


def build_real(path: Path, rows: int, features: int, symbols: int) -> float:
    """The same samples with one REAL column per feature (not a layout the store offers)."""
    start = time.perf_counter()
    cols = ", ".join(f"f{i} REAL NOT NULL" for i in range(features))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE samples (source TEXT NOT NULL, symbol TEXT NOT NULL, ts TEXT NOT NULL, "
        "regime TEXT NOT NULL, weight REAL NOT NULL, label INTEGER, event TEXT, "
        f"feature_version INTEGER NOT NULL, {cols}, PRIMARY KEY (source, symbol, ts)) "
        "WITHOUT ROWID"
    )
    marks = ", ".join("?" * (8 + features))
    for chunk in sample_rows(rows, features, symbols, seed=1):
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO samples VALUES ({marks})",
            [
                (s.source, s.symbol, s.ts, s.regime, s.weight, s.label, s.event, 1,
                 *s.features.tolist())
                for s in chunk
            ],
        )  # fmt: skip
        conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - start


def read_blob_rows(path: Path, features: int) -> np.ndarray:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT features FROM samples WHERE label IS NOT NULL").fetchall()
    matrix = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(-1, features)
    conn.close()
    return matrix


def read_real_rows(path: Path, features: int) -> np.ndarray:
    conn = sqlite3.connect(path)
    cols = ", ".join(f"f{i}" for i in range(features))
    rows = conn.execute(f"SELECT {cols} FROM samples WHERE label IS NOT NULL").fetchall()
    matrix = np.array(rows, dtype=np.float32)
    conn.close()
    return matrix


def build_bars(store: Store, symbols: int, per_symbol: int) -> None:
    batch: list[BarRow] = []
    for s in range(symbols):
        for d in range(per_symbol):
            close = 100.0 + d % 17
            batch.append(
                BarRow(
                    f"S{s:04d}", (BASE_DAY + dt.timedelta(days=d)).isoformat(),
                    close, close + 1, close - 1, close, 1e6, "normal", 18.0, "vix",
                )
            )  # fmt: skip
        if len(batch) >= 50_000:
            store.write_batch(bars=batch)
            batch = []
    store.write_batch(bars=batch)


def commit_latency(path: Path, synchronous: str, batches: int, rows: int) -> float:
    """Median seconds per write_batch of `rows` new bars + `rows` new samples + one offset."""
    rng = np.random.default_rng(2)
    times = []
    with Store(path) as store:
        store._conn.execute(f"PRAGMA synchronous = {synchronous}")  # benchmark-only override
        for b in range(batches):
            day = (BASE_DAY + dt.timedelta(days=b)).isoformat()
            bars = [BarRow(f"S{s:04d}", day, 1, 2, 0.5, 1.5, 1e6, "normal") for s in range(rows)]
            samples = [
                SampleRow(f"S{s:04d}", day, "live", "normal", 1.0, None,
                          rng.standard_normal(50), 1)
                for s in range(rows)
            ]  # fmt: skip
            start = time.perf_counter()
            store.write_batch(bars=bars, samples=samples, offsets={("market.bars", 0): b})
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_memory(url: str, path: Path) -> dict[str, float]:
    """The peak RSS of a fresh process before and after `Store.read_samples()` (see _READ_PEAK)."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_PEAK, url, str(path)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout)
    return result


def memory_table(rows: int, features: int, symbols: int, root: Path) -> None:
    """`--memory`: the peak memory of `Store.read_samples()` on SQLite and on PostgreSQL."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from daemon.store.postgres import PostgresStore
    from tests.postgres_server import PostgresServer

    blob_db = root / "blob.db"
    build_blob(blob_db, rows, features, symbols)
    measured = [("SQLite", read_memory("", blob_db))]
    with PostgresServer() as server:
        url = server.database()
        with PostgresStore(url, path=str(root / "pg.db")) as store:
            for chunk in sample_rows(rows, features, symbols, seed=1):
                store.write_batch(samples=chunk)
        measured.append(("PostgreSQL", read_memory(url, root / "pg.db")))
    print("| store | rows | X + meta MiB | RSS before MiB | peak MiB | peak - before MiB | "
          "after MiB | read s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in measured:
        result = (m["x_bytes"] + m["meta_bytes"]) / 2**20
        before, peak, after = (m[k] / 1024 for k in ("before_kib", "peak_kib", "after_kib"))
        print(
            f"| {name} | {int(m['rows']):,} | {result:.1f} | {before:.0f} | {peak:.0f} | "
            f"{peak - before:.0f} | {after:.0f} | {m['seconds']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="samples (default 1e6)")
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--bars-per-symbol", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per read (best, median)")
    parser.add_argument("--batches", type=int, default=100, help="write_batch calls per mode")
    parser.add_argument("--dir", default=None, help="where the temporary databases go")
    parser.add_argument("--skip-real", action="store_true", help="skip the REAL-column layout")
    parser.add_argument(
        "--memory", action="store_true", help="only the peak memory of read_samples (both stores)"
    )
    args = parser.parse_args(argv)

    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, NumPy {np.__version__}, pandas {pd.__version__}; "
        f"{args.rows:,} samples x {args.features} features, {args.symbols:,} symbols"
    )
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="regimed-bench-") as tmp:
        root = Path(tmp)
        if args.memory:
            memory_table(args.rows, args.features, args.symbols, root)
            return 0
        results: list[tuple[str, str, float, float]] = []

        blob_db = root / "blob.db"
        took = build_blob(blob_db, args.rows, args.features, args.symbols)
        print(f"built the BLOB store through Store.write_batch in {took:.1f} s", flush=True)
        with Store(blob_db) as store:
            meta, matrix = store.read_samples()
            assert matrix.shape == (args.rows, args.features), matrix.shape
            assert len(meta) == args.rows
            best, median = timed(store.read_samples, args.repeat)
        results.append(("float32 BLOB", "Store.read_samples(): meta + X", best, median))
        # One sample off its regime's weight: read_samples must move every weight through SQL.
        conn = sqlite3.connect(blob_db)
        with conn:
            conn.execute(
                "UPDATE samples SET weight = weight + 0.001 WHERE (source, symbol, ts) = "
                "(SELECT source, symbol, ts FROM samples WHERE source = 'live' LIMIT 1)"
            )
        conn.close()
        with Store(blob_db) as store:
            best, median = timed(store.read_samples, args.repeat)
        results.append(
            ("float32 BLOB", "Store.read_samples(), per-sample weights: meta + X", best, median)
        )
        best, median = timed(lambda: read_blob_rows(blob_db, args.features), args.repeat)
        results.append(("float32 BLOB", "row by row, b''.join, frombuffer: X", best, median))

        if not args.skip_real:
            real_db = root / "real.db"
            took = build_real(real_db, args.rows, args.features, args.symbols)
            print(f"built the REAL-column table in {took:.1f} s", flush=True)
            best, median = timed(lambda: read_real_rows(real_db, args.features), args.repeat)
            results.append(
                (f"{args.features} REAL columns", "row by row, np.array: X", best, median)
            )

        bars_db = root / "bars.db"
        with Store(bars_db) as store:
            build_bars(store, args.symbols, args.bars_per_symbol)
            frame = store.last_bars(300)
            assert len(frame) == args.symbols * min(300, args.bars_per_symbol)
            best, median = timed(lambda: store.last_bars(300), args.repeat)
        results.append(
            ("bars", f"Store.last_bars(300) of {args.symbols:,} x {args.bars_per_symbol:,}",
             best, median)
        )  # fmt: skip

        print()
        print(f"| layout | read | best s | median s |  (N={args.rows:,}, repeat={args.repeat})")
        print("|---|---|---:|---:|")
        for layout, what, best, median in results:
            print(f"| {layout} | {what} | {best:.2f} | {median:.2f} |")

        print()
        print(f"| write_batch, median of {args.batches} | synchronous | median ms |")
        print("|---|---|---:|")
        for rows in (500, 0):
            what = f"{rows} bars + {rows} samples + offsets" if rows else "offsets only"
            for mode in (SYNCHRONOUS, "NORMAL"):
                latency = commit_latency(
                    root / f"commit-{mode}-{rows}.db", mode, args.batches, rows
                )
                print(f"| {what} | {mode} | {latency * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
