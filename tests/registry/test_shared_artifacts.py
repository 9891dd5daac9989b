"""Model artifacts in a shared PostgreSQL store: a model registered on one host is verified and
served on another that shares only the database, and bytes changed in the database are refused
by the same sha256 check as a damaged file."""

from __future__ import annotations

import datetime as dt
import os
import stat

import numpy as np
import psycopg
import pytest

from daemon.errors import ArtifactError
from daemon.registry.versions import Registry
from daemon.store.postgres import PostgresStore
from tests.factories import make_data, register


@pytest.fixture
def hosts(postgres_url, tmp_path):
    """Three hosts' stores on one database, each with its own state directory."""
    stores = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        stores.append(PostgresStore(postgres_url, path=str(tmp_path / name / "regimed.db")))
    yield stores
    for store in stores:
        store.close()


def test_a_model_registered_on_one_host_serves_on_another(hosts, models):
    a, b, _ = hosts
    register(Registry(a), "v1", models, promote_reason="gate passed: first model")
    record, bundle = Registry(b).load()
    assert record.version == "v1"
    assert record.path.startswith(os.path.dirname(b.path))
    X, _ = make_data()
    for name, model in models.items():
        np.testing.assert_array_equal(bundle.models[name].predict_proba(X), model.predict_proba(X))
    modes = {stat.S_IMODE(p.stat().st_mode) for p in os.scandir(record.path)}
    assert modes == {0o600}
    assert Registry(b).verify() == {"v1": []}


def test_changed_bytes_in_the_database_are_refused(hosts, models, postgres_url):
    a, _, c = hosts
    register(Registry(a), "v1", models, promote_reason="gate passed: first model")
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "UPDATE model_files SET data = data || '\\x00'::bytea "
            "WHERE version = 'v1' AND file = 'logistic_regression.skops'"
        )
    with pytest.raises(ArtifactError, match=r"logistic_regression\.skops"):
        Registry(c).load()


def test_a_version_registered_without_files_is_missing_on_every_host(hosts, tmp_path):
    a, b, _ = hosts
    Registry(a).add_model(
        "v9", trained_at=dt.datetime(2024, 1, 6, tzinfo=dt.UTC), sha256="0" * 64,
        path=tmp_path / "nowhere",
    )  # fmt: skip
    problems = Registry(b).verify()["v9"]
    assert problems and "nowhere" in problems[0]
    with pytest.raises(ArtifactError):
        Registry(b).load("v9")
