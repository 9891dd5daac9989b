"""Thread counts and the thread policy of model fits: `training.n_jobs = "auto"` leaves the
daemon's consumer and writer their cores, and the retrain process sees the limits and the
OpenMP wait policy in its own environment, in the libraries it loads."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from daemon.config import Config, StoreConfig, parse_config
from daemon.errors import ConfigError
from daemon.runtime.retrain_runner import RetrainRunner
from daemon.training.threads import resolve_n_jobs, thread_limits, usable_cores

# A stand-in for the retrain process: it loads the numeric libraries the trainer uses, as the
# real one does, and reports what they and its environment say instead of training.
STAND_IN = """\
import json, os, sys
request = json.loads(sys.stdin.readline())
import lightgbm, sklearn.ensemble, xgboost
from threadpoolctl import threadpool_info
pools = [{"api": p["user_api"], "threads": p["num_threads"]} for p in threadpool_info()]
env = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "LOKY_MAX_CPU_COUNT")}
report = {"promoted": True, "n_jobs": request["config"]["training"]["n_jobs"],
          "env": env, "pools": pools}
print(json.dumps(report))
"""


@pytest.mark.parametrize(
    ("setting", "reserved", "cores", "expected"),
    [
        ("auto", 2, 8, 6),  # the daemon: the consumer and the writer keep a core each
        ("auto", 2, 3, 1),
        ("auto", 2, 2, 1),  # at least one
        ("auto", 2, 1, 1),
        ("auto", 0, 2, 2),  # the command line: every core
        (3, 2, 2, 3),  # a number is taken as it is
        (1, 0, 8, 1),
    ],
)
def test_n_jobs_resolves_to_the_cores_left(setting, reserved, cores, expected):
    assert resolve_n_jobs(setting, reserved=reserved, cores=cores) == expected


def test_auto_counts_the_cores_this_process_may_run_on():
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})  # as `taskset -c 0` or systemd's CPUAffinity=
        assert usable_cores() == 1
        assert resolve_n_jobs("auto") == 1
    finally:
        os.sched_setaffinity(0, saved)
    assert usable_cores() == len(saved)


@pytest.mark.parametrize("section", ["training", "evaluate"])
def test_n_jobs_is_auto_by_default_and_takes_a_number_or_auto(section):
    assert getattr(Config(), section).n_jobs == "auto"
    assert getattr(parse_config(f"[{section}]\nn_jobs = 3"), section).n_jobs == 3
    env = {f"REGIMED_{section.upper()}__N_JOBS": "4"}
    assert getattr(parse_config("", env), section).n_jobs == 4
    env = {f"REGIMED_{section.upper()}__N_JOBS": "auto"}
    assert getattr(parse_config(f"[{section}]\nn_jobs = 3", env), section).n_jobs == "auto"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"many"', 'n_jobs = "many": expected a whole number or one of "auto"'),
        ("0", "n_jobs = 0: expected a number >= 1 and <= 256"),
        ("1.5", 'n_jobs = 1.5: expected a whole number or one of "auto"'),
    ],
)
def test_a_bad_n_jobs_is_refused_naming_the_key(value, message):
    with pytest.raises(ConfigError, match="training." + message.replace(".", r"\.")):
        parse_config(f"[training]\nn_jobs = {value}")


def test_thread_limits_hold_inside_the_block_and_restore_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with thread_limits(2):
        assert os.environ["OMP_NUM_THREADS"] == "2"
        assert os.environ["OPENBLAS_NUM_THREADS"] == "2"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.fixture
def stand_in(tmp_path) -> str:
    script = tmp_path / "retrain-stand-in"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(0o755)
    return str(script)


def child_report(stand_in: str, store: Path, n_jobs: int | str) -> dict[str, object]:
    config = Config().replace(store=StoreConfig(path=str(store)))
    config = config.replace(training=dataclasses.replace(config.training, n_jobs=n_jobs))
    result = RetrainRunner(config, python=stand_in, poll_seconds=0.05).run("manual")
    assert result.report is not None, result.reason
    return dict(result.report.extra)  # the stand-in's document: none of the report's keys


@pytest.mark.integration  # a child process
@pytest.mark.parametrize("n_jobs", ["auto", 3])
def test_the_retrain_process_runs_with_the_configured_threads_and_passive_waits(
    stand_in, tmp_path, n_jobs
):
    before = dict(os.environ)
    report = child_report(stand_in, tmp_path / "regimed.db", n_jobs)
    expected = n_jobs if isinstance(n_jobs, int) else max(1, usable_cores() - 2)
    assert report["n_jobs"] == expected  # what the trainer in the child fits with
    assert report["env"] == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(expected),
        "LOKY_MAX_CPU_COUNT": str(expected),  # joblib's cpu_count()
    }
    pools = report["pools"]
    assert isinstance(pools, list)
    threads = {api: {p["threads"] for p in pools if p["api"] == api} for api in ("openmp", "blas")}
    assert threads["openmp"] == {expected}  # every OpenMP runtime loaded (each library's own)
    assert threads["blas"] == {min(expected, os.cpu_count() or 1)}  # OpenBLAS caps at the cores
    assert dict(os.environ) == before  # the daemon's own environment is untouched
    assert json.dumps(report)  # a plain JSON report, as the real child prints
