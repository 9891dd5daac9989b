"""One retrain per group and window: two daemons of one group (two retrain runners, each
training in child processes of its own, with their own store handles) share a real PostgreSQL
store; the second of them to take the lock for a window another already served trains nothing
and names who did, while the next window trains. On SQLite a single daemon trains every window
it asks for, as before."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from daemon.config import Config, GateConfig, StoreConfig
from daemon.registry.versions import Registry
from daemon.runtime.retrain_child import EXIT_ALREADY_RUN
from daemon.runtime.retrain_runner import RetrainRunner
from daemon.store.sqlite import Store
from daemon.training.window import RetrainWindow
from tests.factories import store_history

pytestmark = pytest.mark.integration  # real child processes, a real PostgreSQL server


def daemon_config(path: Path, member: str, url: str = "") -> Config:
    """A daemon of the group `member`: one fast model, a gate that promotes a first model."""
    config = Config(
        store=StoreConfig(path=str(path), url=url),
        gate=GateConfig(bootstrap_samples=100, min_edge=-1.0),
    )
    training = dataclasses.replace(config.training, models=("logistic_regression",), n_jobs=1)
    kafka = dataclasses.replace(config.kafka, group_instance_id=member)
    return config.replace(training=training, kafka=kafka)


def host(tmp_path: Path, name: str) -> Path:
    """A host's local directory: its store anchor (models/ beside it)."""
    directory = tmp_path / name
    directory.mkdir()
    return directory / "regimed.db"


def runs(config: Config) -> list[tuple[str, str | None, object]]:
    with Store.open(config.store, read_only=True) as store:
        return [
            (r.trigger, r.version, r.report.get("ran_by"))
            for r in Registry(store).retrain_runs_since(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        ]


def test_the_second_daemon_of_a_window_skips_and_the_next_window_runs(
    tmp_path, postgres_url, sp500, vix
):
    a = daemon_config(host(tmp_path, "host-a"), "regimed-a", postgres_url)
    b = daemon_config(host(tmp_path, "host-b"), "regimed-b", postgres_url)
    store_history(a, {"^GSPC": sp500.iloc[-1500:]}, vix)
    fired = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # this week's firing, just now

    first = RetrainRunner(a).run("schedule", RetrainWindow.scheduled(fired))
    assert first.outcome == "promoted", first.reason
    # B's firing of the same window comes after A released the lock: nothing trains.
    late = RetrainRunner(b).run("schedule", RetrainWindow.scheduled(fired))
    assert late.outcome == "already_run", late.reason
    assert late.returncode == EXIT_ALREADY_RUN
    assert late.report is None and late.already_run is not None
    assert late.already_run.version == first.version
    assert f"version {first.version} (promoted)" in late.reason
    assert "a schedule retrain by regimed-a on " in late.reason
    assert runs(b) == [("schedule", first.version, first.report.ran_by)]  # the skip: no row

    # A drift B detected before A's run finished was served by it; one detected now is not.
    drift = RetrainRunner(b).run("drift", RetrainWindow.drift(fired))
    assert drift.outcome == "already_run", drift.reason
    assert drift.reason.startswith(f"the retrain for the drift detected at {fired.isoformat()}")
    after = RetrainRunner(b).run("drift", RetrainWindow.drift(dt.datetime.now(dt.UTC)))
    assert after.outcome == "unchanged", after.reason  # it trained (same data: no version)

    # Next week's firing: a run, by whichever daemon takes the lock first.
    next_week = RetrainWindow.scheduled(dt.datetime.now(dt.UTC))
    again = RetrainRunner(b).run("schedule", next_week)
    assert again.outcome == "unchanged", again.reason
    assert RetrainRunner(a).run("schedule", next_week).outcome == "already_run"
    recorded = runs(a)
    assert [(trigger, by.split(" on ")[0]) for trigger, _, by in recorded] == [
        ("schedule", "regimed-a"),
        ("drift", "regimed-b"),
        ("schedule", "regimed-b"),
    ]


def test_one_daemon_on_sqlite_trains_every_window_it_asks_for(tmp_path, sp500, vix):
    config = daemon_config(host(tmp_path, "host"), "regimed-1")
    store_history(config, {"^GSPC": sp500.iloc[-1500:]}, vix)
    runner = RetrainRunner(config)
    fired = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    scheduled = runner.run("schedule", RetrainWindow.scheduled(fired))
    assert scheduled.outcome == "promoted", scheduled.reason
    # A drift detected after the scheduled run: a retrain of its own.
    drift = runner.run("drift", RetrainWindow.drift(dt.datetime.now(dt.UTC)))
    assert drift.outcome == "unchanged", drift.reason
    assert [trigger for trigger, _, _ in runs(config)] == ["schedule", "drift"]


def test_two_daemons_firing_together_train_once(tmp_path, postgres_url, sp500, vix):
    """Both fire at the same scheduled time; with a lock timeout the second waits for the
    first instead of giving up busy, then finds the window served."""
    configs = [
        daemon_config(host(tmp_path, f"host-{n}"), f"regimed-{n}", postgres_url) for n in "ab"
    ]
    configs = [
        c.replace(training=dataclasses.replace(c.training, lock_timeout_seconds=120.0))
        for c in configs
    ]
    store_history(configs[0], {"^GSPC": sp500.iloc[-1500:]}, vix)
    window = RetrainWindow.scheduled(dt.datetime.now(dt.UTC))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: RetrainRunner(c).run("schedule", window), configs))
    assert sorted(r.outcome for r in results) == ["already_run", "promoted"], [
        r.reason for r in results
    ]
    assert [trigger for trigger, _, _ in runs(configs[1])] == ["schedule"]
