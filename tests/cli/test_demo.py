"""`regimed demo --exit-after-retrain`, the README's main command, run as a new user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from daemon.config import Config, StoreConfig
from daemon.data.history import bundled_path, read_vix_csv
from daemon.domain import REGIMES
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from tests.factories import alive, bundled_slice, store_history, wait_for

pytestmark = pytest.mark.integration


def demo_once(state: Path, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`regimed demo --exit-after-retrain` on `state`, from `cwd` (no config.toml there: the
    built-in defaults, as on a fresh machine, unless `options` name a --config)."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--exit-after-retrain", "--metrics-port", "0",
         "--state-dir", str(state), *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )  # fmt: skip


def test_demo_shows_the_whole_loop_on_the_bundled_history(tmp_path, postgres_url):
    state = tmp_path / "state"
    done = demo_once(state, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout, done.stderr
    # stderr is a pipe here, as under systemd: plain lines, no carriage returns, no traceback
    assert "\r" not in err and "\x1b[" not in err
    assert "Traceback" not in err
    # progress throughout
    for step in ("embedded Kafka broker", "replaying 11,321 bundled bars", "archive built",
                 "retraining", "consumed 11,321/11,321 bars",
                 "label target direction:h=5:threshold=0"):  # fmt: skip
        assert step in err, step
    # the per-regime table, balanced accuracy beside the naive references, and the decision
    assert "validation (balanced accuracy; accuracy beside it)" in out
    for regime in (*REGIMES, "overall"):
        assert re.search(rf"^{regime}\s+[\d,]+\s", out, flags=re.M), regime
    assert "always up" in out and "prev. return" in out
    assert "target direction:h=5:threshold=0" in out  # which target the demo trained
    assert re.search(r"^decision: (PROMOTED|NOT PROMOTED) \(\w+\): .+", out, flags=re.M)
    report_path = Path(re.search(r"^report: (.+\.html)$", out, flags=re.M).group(1))
    assert report_path.is_file() and report_path.parent.parent == state
    assert "<svg" in report_path.read_text()
    # the state the daemon left: the replay stored, a registered model, one recorded run
    with Store.open(store_config(state), read_only=True) as store:
        assert store.bar_count() == 11_321  # every replayed bar, the VIX closes included
        (model,) = Registry(store).models()
        run = Registry(store).last_retrain_run()
    assert run is not None and run.trigger == "demo" and run.version == model.version
    assert json.loads(json.dumps(model.report))["training"]["effective_size_ratio"] == (
        pytest.approx(1.17, abs=5e-3)
    )

    # The same state directory a second time: a fresh broker replays the same history, the
    # stored offsets skip it, and one more retrain on the same data predicts exactly as the
    # first one's model (the champion, or the last candidate): unchanged, no second version.
    # A configuration naming a PostgreSQL store changes nothing: the demo keeps its own store
    # in its state directory and writes nothing into the shared database.
    config = tmp_path / "shared.toml"
    config.write_text(f'[store]\nurl = "{postgres_url}"\n')
    again = demo_once(state, tmp_path, "--config", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert f"store.url is not used: the demo keeps its own store in {state}" in again.stderr
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    assert re.search(r"^decision: NOT PROMOTED \(unchanged\): ", again.stdout, flags=re.M)
    with Store.open(store_config(state), read_only=True) as store:
        assert store.bar_count() == 11_321  # nothing stored twice
        assert len(Registry(store).models()) == 1
        assert Registry(store).last_retrain_run().version is None


def broker_pid(err: str) -> int:
    return int(re.search(r"embedded broker pid (\d+)", err).group(1))


def test_sigterm_stops_the_demo_its_broker_and_removes_its_temporary_state(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    err_path = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    with open(err_path, "w") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "daemon", "demo", "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env={**env, "TMPDIR": str(temp)},  # the temporary state directory goes here
        )
        try:
            wait_for(lambda: "daemon running" in err_path.read_text(), 120, "the daemon")
            broker = broker_pid(err_path.read_text())
            assert alive(broker) and list(temp.glob("regimed-demo-*"))
            demo.send_signal(signal.SIGTERM)
            code = demo.wait(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(timeout=10)
    text = err_path.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    assert not alive(broker)
    assert list(temp.iterdir()) == []


def test_a_busy_metrics_port_stops_the_demo_with_one_error_line(run_cli, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", "--exit-after-retrain", "--metrics-port", str(port))
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: metrics.port = {port}: cannot listen on 127.0.0.1:{port}: Address already in "
        "use (choose another with --metrics-port PORT; 0 picks a free one)"
    ]
    assert "Traceback" not in result.err


def store_config(state: Path):
    from daemon.config import StoreConfig

    return StoreConfig(path=str(state / "regimed.db"))


def test_demo_keeps_its_store_in_a_postgresql_database_with_store_url(
    tmp_path, postgres, postgres_url
):
    # A database of a group of daemons (bars the demo did not write) is refused, untouched.
    taken = postgres.database()
    try:
        config = Config().replace(store=StoreConfig(path=str(tmp_path / "x.db"), url=taken))
        sp500, _ = bundled_slice("sp500", "2018-01-01", "2018-03-31")
        store_history(config, {"^GSPC": sp500}, read_vix_csv(bundled_path("vix")))
        refused = demo_once(tmp_path / "refused", tmp_path, "--store-url", taken)
        assert refused.returncode == 1
        assert f"{taken} holds {len(sp500)} bars that regimed demo did not write" in (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
        with Store.open(config.store, read_only=True) as store:
            assert store.bar_count() == len(sp500)
    finally:
        postgres.drop(taken)

    # An empty database: the whole loop runs on it, and everything the daemon keeps is there.
    state = tmp_path / "state"
    done = demo_once(state, tmp_path, "--store-url", postgres_url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"store in the PostgreSQL database {postgres_url}" in done.stderr
    assert re.search(r"^decision: (PROMOTED|NOT PROMOTED) \(\w+\): .+", done.stdout, flags=re.M)
    assert not (state / "regimed.db").exists()  # the state directory keeps no SQLite store
    shared = StoreConfig(path=str(state / "regimed.db"), url=postgres_url)
    with Store.open(shared, read_only=True) as store:
        assert store.bar_count() == 11_321
        (model,) = Registry(store).models()
        assert Registry(store).last_retrain_run().version == model.version
