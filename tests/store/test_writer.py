"""The store's writer process: the same transaction as in process, errors that name the reason,
and a child that stops only when the daemon says so, or dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daemon.domain import BarRow, LabelUpdate, RowBlock, SampleRow
from daemon.errors import StoreError
from daemon.store.sqlite import BACKSTOP_CHECKPOINT_PAGES, Store
from daemon.store.writer import StoreWriter


def batch(day: str, label_day: str | None = None) -> dict:
    features = np.arange(4, dtype="<f4")
    return {
        "bars": [BarRow("AAA", day, 10.0, 11.0, 9.0, 10.5, 100.0, "normal", 18.0, "vix")],
        "samples": [SampleRow("AAA", day, "live", "normal", 1.0, None, features, 1)],
        "block": RowBlock(
            bars=[("BBB", day, 20.0, 21.0, 19.0, 20.5, 50.0, "crash", 45.0, "vix")],
            samples=[("live", "BBB", day, "crash", 3.0, 1, None, 1, features.tobytes())],
        ),
        "labels": [] if label_day is None else [LabelUpdate("AAA", label_day, "live", 0)],
        "offsets": {("bars", 0): 7},
        "counters": {"events_stored": 2},
    }


def test_a_batch_written_by_the_child_is_the_batch_written_in_process(tmp_path: Path):
    direct, child = tmp_path / "direct.db", tmp_path / "child.db"
    Store(child).close()
    with Store(direct) as store:
        expected = [
            store.write_batch(**batch(d, p))
            for d, p in (("2020-01-02", None), ("2020-01-03", "2020-01-02"))
        ]
    with StoreWriter(child) as writer:
        got = [
            writer.write(**batch(d, p))
            for d, p in (("2020-01-02", None), ("2020-01-03", "2020-01-02"))
        ]
    assert got == expected
    assert got[1].labels_set == 1
    with Store(direct) as a, Store(child) as b:
        assert a.bars().equals(b.bars())
        meta_a, X_a = a.read_samples()[:2]
        meta_b, X_b = b.read_samples()[:2]
        assert meta_a.equals(meta_b)
        np.testing.assert_array_equal(X_a, X_b)
        assert b.offsets("bars") == {0: 7}
        assert b.counter("events_stored") == 4


def test_a_failed_transaction_raises_its_reason_and_the_writer_goes_on(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    with StoreWriter(path) as writer:
        writer.write(**batch("2020-01-02"))
        bad = batch("2020-01-03")
        bad["block"].samples.append(
            ("live", "CCC", "2020-01-03", "normal", 1.0, None, None, 1, b"\0" * 12)
        )
        with pytest.raises(StoreError, match="feature_version 1: sample CCC 2020-01-03 live has 3"):
            writer.write(**bad)
        assert not writer.in_flight
        writer.write(**batch("2020-01-06"))  # still serving
    with Store(path) as store:
        assert sorted(store.bars()["ts"].dt.strftime("%Y-%m-%d").unique()) == [
            "2020-01-02",
            "2020-01-06",
        ]  # nothing of the failed batch


def test_one_batch_in_flight_at_a_time(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    with StoreWriter(path) as writer:
        writer.submit(**batch("2020-01-02"))
        assert writer.in_flight
        with pytest.raises(StoreError, match="a batch in flight"):
            writer.submit(**batch("2020-01-03"))
        assert writer.result().bars_inserted == 2
        with pytest.raises(StoreError, match="no batch in flight"):
            writer.result()


def test_the_child_ignores_sigterm_and_stops_when_closed(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = StoreWriter(path)
    try:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGTERM)
        os.kill(writer.pid, signal.SIGINT)
        assert writer.write(**batch("2020-01-02")).bars_inserted == 2
    finally:
        writer.close()
    assert not _alive(writer.pid)


def test_a_store_that_cannot_open_fails_the_start_naming_it(tmp_path: Path):
    with pytest.raises(StoreError, match="missing"):
        StoreWriter(tmp_path / "missing" / "s.db")


def test_the_child_dies_with_its_parent(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    script = textwrap.dedent(
        f"""
        import sys, time
        from daemon.store.writer import StoreWriter
        if __name__ == "__main__":
            writer = StoreWriter({str(path)!r})
            print(writer.pid, flush=True)
            time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_checkpoints_run_on_their_own_thread_and_stop_with_the_store(tmp_path: Path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.checkpoint_in_background()
        thread = store._checkpointer
        assert thread is not None and thread.is_alive()
        autocheckpoint = store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert autocheckpoint == BACKSTOP_CHECKPOINT_PAGES  # a batch no longer checkpoints
        before = path.stat().st_size
        days = pd.bdate_range("2020-01-01", periods=400).strftime("%Y-%m-%d")
        store.write_batch(
            bars=[
                BarRow(f"S{i:03d}", day, 10.0, 11.0, 9.0, 10.5, 1.0, None, None, "none")
                for i in range(20)
                for day in days
            ]
        )
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before  # the thread copied the WAL into the database
    assert not thread.is_alive()
    with Store(path) as store:
        assert store.bar_count() == 8_000
