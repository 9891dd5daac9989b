"""Retrains in a real child process on a small real store: a complete run through the scheduler,
a stop mid-run, the daemon dying mid-run, a busy lock, a failed run, SIGKILL after the grace,
the timeout, and a command-line retrain noticed by the daemon. One base model, a tiny store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.config import (
    AlertsConfig,
    ArchiveConfig,
    ArchiveEvent,
    Config,
    GateConfig,
    KafkaConfig,
    ModelsConfig,
    ScheduleConfig,
    StoreConfig,
)
from daemon.config.runtime import RetrainProcessConfig
from daemon.config.settings import Secret
from daemon.config.training import RandomForestConfig
from daemon.registry.versions import Registry
from daemon.runtime.retrain_runner import (
    EXIT_BUSY,
    EXIT_TERMINATED,
    RetrainRunner,
    RunResult,
    config_document,
    config_from_document,
)
from daemon.runtime.scheduler import ChampionWatch, RetrainScheduler, champion_version, last_success
from daemon.store.sqlite import Store
from daemon.training.lock import lock_path, retrain_lock
from tests.factories import copy_store, store_history

pytestmark = pytest.mark.integration  # real child processes

RUN_WAIT_S = 120.0  # a whole child retrain on two busy cores, at most
GRACE_S = 10.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def make_config(path: Path, *, slow: bool = False, **training: object) -> Config:
    """One fast model and a gate that promotes a first model; `slow`: a random forest that
    takes far longer than any test waits, to be stopped mid-fit."""
    config = Config(
        store=StoreConfig(path=str(path)),
        gate=GateConfig(bootstrap_samples=100, min_edge=-1.0),
    )
    models = ("random_forest",) if slow else ("logistic_regression",)
    if slow:
        config = config.replace(
            models=ModelsConfig(random_forest=RandomForestConfig(n_estimators=5000))
        )
    options = {"models": models, "n_jobs": 1, **training}
    return config.replace(training=dataclasses.replace(config.training, **options))


@pytest.fixture(scope="session")
def small_db(tmp_path_factory, sp500, vix) -> Path:
    """A store with the last 1500 bundled S&P 500 bars as live samples (about 1,500 samples)."""
    path = tmp_path_factory.mktemp("small") / "regimed.db"
    config = make_config(path)
    store_history(config, {"^GSPC": sp500.iloc[-1500:]}, vix)
    return path


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    return copy_store(small_db, tmp_path)


def with_champion(path: Path) -> str:
    """Register a champion row (its artifact is never loaded: the runs here stop earlier)."""
    with Store.open(StoreConfig(path=str(path))) as store:
        Registry(store).add_model(
            "20240106T210000Z",
            trained_at=dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC),
            sha256="0" * 64,
            path=path.parent / "models" / "20240106T210000Z",
            status="champion",
        )
    return "20240106T210000Z"


def registry_state(path: Path) -> tuple[str | None, int, object]:
    with Store.open(StoreConfig(path=str(path))) as store:
        registry = Registry(store)
        return champion_version(store), len(registry.models()), registry.last_retrain_run()


def lock_holder(path: Path) -> int | None:
    """The pid in the retrain lock file: set while a retrain holds the lock."""
    try:
        text = lock_path(path).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def run_in_thread(runner: RetrainRunner, trigger: str) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.run(trigger)))
    thread.start()
    return thread, results


def assert_nothing_left_behind(path: Path) -> None:
    with retrain_lock(path):  # free again
        pass
    assert not list((path.parent / "models").glob(".tmp-*"))


# -- complete runs ---------------------------------------------------------------------------------


def test_a_triggered_retrain_runs_in_a_child_and_observers_get_the_parsed_report(db):
    config = make_config(db)
    runner = RetrainRunner(config)
    scheduler = RetrainScheduler(ScheduleConfig(), runner)
    results: list[RunResult] = []
    scheduler.on_result(results.append)
    scheduler.start()
    try:
        assert scheduler.trigger("drift")
        wait_for(lambda: results, RUN_WAIT_S, "the retrain result")
    finally:
        assert scheduler.shutdown(timeout=GRACE_S + 5)
    (result,) = results
    assert result.outcome == "promoted", result.reason
    assert result.returncode == 0
    assert result.trigger == "drift"
    assert 0 < result.duration_seconds < RUN_WAIT_S
    assert result.report is not None
    # The child's own peak memory, in bytes: it imported numpy, pandas and scikit-learn (far
    # past 50 MiB), and read ru_maxrss's KiB as KiB.
    assert 50 * 2**20 < (result.report.peak_rss_bytes or 0) < 64 * 2**30
    report = result.report.to_json()
    for key in ("version", "trigger", "duration_seconds", "promoted", "reason", "training"):
        assert key in report
    assert set(report["validation"]) >= {"per_regime", "overall", "baselines", "models"}
    assert list(report["validation"]["models"]) == ["logistic_regression", "ensemble"]
    assert report["trigger"] == "drift"
    assert result.reason == report["reason"]
    with Store.open(config.store) as store:
        assert champion_version(store) == result.version
        run = Registry(store).last_retrain_run()
        assert (run.trigger, run.version, run.promoted) == ("drift", result.version, True)
        assert result.started_at is not None
        assert last_success(store) == run.started_at
        assert result.started_at <= run.started_at
    assert scheduler.outcomes == {("drift", "promoted"): 1}


def test_a_second_run_on_unchanged_data_is_unchanged_and_adds_no_version(db):
    runner = RetrainRunner(make_config(db))
    first = runner.run("schedule")
    assert first.outcome == "promoted", first.reason
    second = runner.run("schedule")
    assert second.outcome == "unchanged", second.reason
    assert second.version is None and "no version added" in second.reason
    champion, versions, run = registry_state(db)
    assert (champion, versions) == (first.version, 1)
    assert run.version is None and not run.promoted
    with Store.open(StoreConfig(path=str(db))) as store:
        assert last_success(store) == run.started_at  # no catch-up of a run that was served


def test_a_failed_retrain_is_failed_with_the_report_of_the_failed_run(tmp_path):
    config = make_config(tmp_path / "empty.db")
    with Store.open(config.store):
        pass  # a store with no samples
    result = RetrainRunner(config).run("schedule")
    assert result.outcome == "failed"
    assert result.returncode == 1
    assert result.report is not None
    assert result.report.outcome == "failed"
    assert "no live samples" in result.reason
    assert registry_state(tmp_path / "empty.db")[2].reason == result.reason


def test_busy_when_another_retrain_holds_the_lock(db):
    runner = RetrainRunner(make_config(db))
    with retrain_lock(db):  # what a `regimed retrain` in a terminal holds
        result = runner.run("drift")
    assert result.outcome == "busy"
    assert result.returncode == EXIT_BUSY
    assert f"another retrain is running on this store (pid {os.getpid()}" in result.reason
    assert registry_state(db) == (None, 0, None)


def test_a_command_line_retrain_is_picked_up_through_champion_watch(db, tmp_path, run_cli):
    path = tmp_path / "config.toml"
    path.write_text(
        f'[store]\npath = "{db}"\n[training]\nmodels = ["logistic_regression"]\nn_jobs = 1\n'
        "[gate]\nbootstrap_samples = 100\nmin_edge = -1.0\n"
    )
    with Store.open(StoreConfig(path=str(db))) as store:
        watch = ChampionWatch(champion_version(store))
        assert watch.version is None
        assert watch.poll(store) is False
        done = run_cli("retrain", "--json", "--config", str(path))
        assert done.code == 0, done.err
        version = json.loads(done.out)["version"]
        assert watch.poll(store) is True
        assert watch.version == version
        assert watch.poll(store) is False


# -- stopping --------------------------------------------------------------------------------------


def test_a_stop_during_a_fit_terminates_the_child_in_the_grace_and_keeps_the_champion(db, caplog):
    champion = with_champion(db)
    caplog.set_level(logging.DEBUG)  # the child logs at the daemon's level: progress too

    def fitting() -> bool:
        return any("model_started" in r.getMessage() for r in list(caplog.records))

    stop = threading.Event()
    process = RetrainProcessConfig(stop_grace_seconds=GRACE_S)
    runner = RetrainRunner(make_config(db, slow=True), stop=stop, process=process)
    thread, results = run_in_thread(runner, "schedule")
    try:
        wait_for(fitting, RUN_WAIT_S, "the child to start fitting (its log, forwarded)")
        child = lock_holder(db)
        assert child is not None
        assert child != os.getpid()
    finally:
        stopped_at = time.monotonic()
        stop.set()
        thread.join(GRACE_S + 10)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < GRACE_S  # SIGTERM sufficed, no SIGKILL needed
    (result,) = results
    assert result.outcome == "stopped"
    assert result.returncode == EXIT_TERMINATED  # the child unwound its retrain and exited
    assert result.report is None
    assert not alive(child)
    assert registry_state(db) == (champion, 1, None)  # no model, no run recorded
    assert_nothing_left_behind(db)
    assert runner.run("drift").outcome == "stopped"  # stopping: nothing new starts
    forwarded = [r for r in caplog.records if r.getMessage().startswith(f"[retrain {child}]")]
    assert any(r.name == "daemon.training.trainer" for r in forwarded)
    assert forwarded[-1].levelno == logging.WARNING
    assert "terminated: the retrain is abandoned" in forwarded[-1].getMessage()


def test_a_child_terminated_from_outside_is_stopped_not_failed(db):
    """systemd stops the whole unit: the child gets its own SIGTERM, maybe before the daemon."""
    runner = RetrainRunner(make_config(db, slow=True))
    thread, results = run_in_thread(runner, "schedule")
    try:
        wait_for(lambda: lock_holder(db) is not None, RUN_WAIT_S, "the child to take the lock")
        child = lock_holder(db)
        assert child is not None
        os.kill(child, signal.SIGTERM)
    finally:
        thread.join(GRACE_S + 10)
    (result,) = results
    assert (result.outcome, result.returncode) == ("stopped", EXIT_TERMINATED)
    assert "terminated (SIGTERM)" in result.reason
    assert registry_state(db) == (None, 0, None)
    assert_nothing_left_behind(db)


def test_the_child_stops_when_the_daemon_dies(db, tmp_path):
    champion = with_champion(db)
    document = tmp_path / "config.json"
    document.write_text(json.dumps(config_document(make_config(db, slow=True))))
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "from daemon.runtime.retrain_runner import RetrainRunner, config_from_document\n"
            "config = config_from_document(json.loads(open(sys.argv[1]).read()))\n"
            "RetrainRunner(config).run('schedule')\n",
            str(document),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: lock_holder(db) is not None, RUN_WAIT_S, "the child to take the lock")
        child = lock_holder(db)
        assert child not in (daemon.pid, os.getpid())
    finally:
        daemon.kill()  # SIGKILL: the daemon gets no chance to stop its child
        daemon.wait(10)
    with retrain_lock(db, timeout_s=GRACE_S):  # the child unwound and released the lock
        pass
    wait_for(lambda: not alive(child), GRACE_S, "the child to exit")
    assert registry_state(db) == (champion, 1, None)
    assert_nothing_left_behind(db)


@pytest.fixture
def stubborn_python(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A stand-in interpreter that ignores SIGTERM and writes its pid to a file."""
    script = tmp_path / "stubborn"
    script.write_text("#!/bin/sh\ntrap '' TERM\necho $$ > \"$STUBBORN_PID\"\nexec sleep 60\n")
    script.chmod(0o755)
    marker = tmp_path / "pid"
    monkeypatch.setenv("STUBBORN_PID", str(marker))
    return str(script), marker


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(db, stubborn_python):
    python, marker = stubborn_python
    stop = threading.Event()
    process = RetrainProcessConfig(stop_grace_seconds=0.5)
    runner = RetrainRunner(make_config(db), stop=stop, process=process, python=python)
    thread, results = run_in_thread(runner, "drift")
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip(), 10, "the child")
    finally:
        stopped_at = time.monotonic()
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert 0.5 <= time.monotonic() - stopped_at < 5
    (result,) = results
    assert (result.outcome, result.returncode) == ("stopped", -signal.SIGKILL)
    assert not alive(int(marker.read_text()))


def test_a_run_past_the_timeout_is_stopped_and_counted_as_failed(db, stubborn_python):
    python, _ = stubborn_python
    process = RetrainProcessConfig(stop_grace_seconds=0.2, timeout_seconds=0.5)
    t0 = time.monotonic()
    result = RetrainRunner(make_config(db), process=process, python=python).run("schedule")
    assert time.monotonic() - t0 < 5
    assert result.outcome == "failed"
    assert result.reason == "timed out after 0.5 s; the champion is kept"
    assert result.returncode == -signal.SIGKILL


def test_nothing_starts_once_the_daemon_is_stopping(tmp_path):
    stop = threading.Event()
    stop.set()
    result = RetrainRunner(make_config(tmp_path / "none.db"), stop=stop).run("drift")
    assert (result.outcome, result.returncode, result.duration_seconds) == ("stopped", None, 0.0)
    assert not (tmp_path / "none.db").exists()


def test_a_missing_interpreter_is_a_failed_run(tmp_path):
    runner = RetrainRunner(make_config(tmp_path / "x.db"), python=str(tmp_path / "nope"))
    result = runner.run("manual")
    assert result.outcome == "failed"
    assert result.reason.startswith(f"cannot start the retrain process ({tmp_path / 'nope'})")


# -- the configuration the child gets --------------------------------------------------------------


def test_the_child_gets_the_effective_configuration_exactly_secrets_included():
    config = make_config(Path("/var/lib/regimed/regimed.db")).replace(
        kafka=KafkaConfig(
            bootstrap_servers=("a:9092", "b:9093"),
            sasl_plain_password=Secret("kafka-pass"),
            max_poll_interval_ms=123_456,
        ),
        alerts=AlertsConfig(webhooks=(Secret("https://hooks.example/T0K3N"),), timeout_seconds=2),
        archive=ArchiveConfig(
            budget=0,
            events=(
                ArchiveEvent("Crash", dt.date(2008, 9, 1), dt.date(2009, 3, 31), "crash", 0.5),
                ArchiveEvent("Calm", dt.date(2017, 1, 2), dt.date(2017, 12, 29), "normal", 0.5),
            ),
        ),
        schedule=ScheduleConfig(day_of_week="sun", hour=3, timezone="UTC"),
    )
    wire = json.loads(json.dumps(config_document(config)))
    assert config_from_document(wire) == config
    assert wire["alerts"]["webhooks"] == ["https://hooks.example/T0K3N"]  # unlike to_toml
    assert "T0K3N" not in config.to_toml()
    assert config_from_document(json.loads(json.dumps(config_document(Config())))) == Config()


def test_a_retrain_that_swallows_the_sigterm_exception_still_exits_after_the_grace():
    """The exception a signal handler raises is lost when it lands in a finalizer or a
    library's catch-all: the child must end all the same."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "from daemon.runtime.retrain_child import _sigterm_handler\n"
            "signal.signal(signal.SIGTERM, _sigterm_handler(1.0))\n"
            "ready = False\n"
            "while True:\n"
            "    try:\n"  # 'ready' inside the try: a signal landing in its print is swallowed too
            "        if not ready:\n"
            "            ready = True\n"
            "            print('ready', flush=True)\n"
            "        time.sleep(0.05)\n"
            "    except BaseException:\n"
            "        print('swallowed', flush=True)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.stdout.readline().strip() == "swallowed"
        child.send_signal(signal.SIGTERM)  # a second one is ignored, the unwinding goes on
        returncode = child.wait(timeout=GRACE_S)
    finally:
        child.kill()
        child.communicate()
    assert returncode == EXIT_TERMINATED


def test_a_sigterm_that_a_library_turns_into_another_exception_still_ends_as_terminated():
    """Once SIGTERM arrived, whatever the retrain ends with is the termination's doing: a
    library that catches the handler's exception and raises its own (numpy's buffer-format
    parser did, mid-import) must not make the run `failed`."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from daemon.runtime import retrain_child\n"
            "def train(*args):\n"
            "    print('ready', file=sys.stderr, flush=True)\n"
            "    try:\n"
            "        time.sleep(30)\n"
            "    except BaseException as exc:\n"
            "        raise ValueError('not a valid PEP 3118 buffer format string') from exc\n"
            "retrain_child._train = train\n"
            "sys.exit(retrain_child._child())\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None and child.stderr is not None
        child.stdin.write(json.dumps({"trigger": "schedule", "grace_seconds": 5, "config": {}}))
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stderr.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        returncode = child.wait(timeout=GRACE_S)
        err = child.stderr.read()
    finally:
        child.kill()
        child.communicate()
    assert returncode == EXIT_TERMINATED
    assert "terminated: the retrain is abandoned, the champion is kept" in err
