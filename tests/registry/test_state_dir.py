"""A state directory (the store and its `models/`) can be copied, moved or restored: the
registry's artifact paths are relative to the store's directory, so every command reads the
artifacts of the copy it is pointed at, and a store written with absolute paths is migrated."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression
from sqlite_utils import Database
from xgboost import XGBClassifier

from daemon.errors import ArtifactError
from daemon.registry.artifacts import save_bundle
from daemon.registry.versions import Registry
from daemon.store.migrations import migrate
from daemon.store.sqlite import Store
from tests.factories import make_data, register

T0 = dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def models():
    X, y = make_data()
    return {
        "logistic_regression": LogisticRegression().fit(X, y),
        "xgboost": XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(X, y),
    }


@pytest.fixture
def original(tmp_path, models) -> Path:
    """A state directory holding a store with two registered versions."""
    state = tmp_path / "original"
    state.mkdir()
    with Store(state / "regimed.db") as store:
        registry = Registry(store)
        register(registry, "v1", models)
        register(registry, "v2", models, T0 + dt.timedelta(days=7))
    return state


def config(state: Path) -> str:
    path = state / "config.toml"
    path.write_text(f'[store]\npath = "{state / "regimed.db"}"\n')
    return str(path)


def raw_paths(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT version, path FROM models").fetchall())
    finally:
        conn.close()


def test_the_registry_stores_artifact_paths_relative_to_the_store(original):
    assert raw_paths(original / "regimed.db") == {"v1": "models/v1", "v2": "models/v2"}
    with Store(original / "regimed.db", read_only=True) as store:
        assert Registry(store).model("v1").path == str(original / "models" / "v1")


def test_a_copied_state_directory_uses_its_own_artifacts(original, tmp_path, run_cli):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    listed = run_cli("models", "list", "--json", "--config", config(copy))
    assert [m["path"] for m in json.loads(listed.out)] == [
        str(copy / "models" / "v1"),
        str(copy / "models" / "v2"),
    ]
    assert run_cli("models", "verify", "--config", config(copy)).code == 0


def tamper_a_file(state: Path) -> str:
    target = state / "models" / "v1" / "xgboost.ubj"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    return f"{target}: sha256 "


def delete_a_file(state: Path) -> str:
    target = state / "models" / "v1" / "logistic_regression.skops"
    target.unlink()
    return f"{target}: missing"


def swap_the_sha(state: Path) -> str:
    conn = sqlite3.connect(state / "regimed.db")
    with conn:
        (v2,) = conn.execute("SELECT sha256 FROM models WHERE version = 'v2'").fetchone()
        conn.execute("UPDATE models SET sha256 = ? WHERE version = 'v1'", (v2,))
    conn.close()
    return f"{state / 'models' / 'v1' / 'manifest.json'}: sha256 "


@pytest.mark.parametrize("tamper", [tamper_a_file, delete_a_file, swap_the_sha])
def test_a_tampered_copy_fails_verification_naming_its_file_and_the_original_verifies(
    original, tmp_path, run_cli, tamper
):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    named = tamper(copy)

    result = run_cli("models", "verify", "--config", config(copy))
    assert result.code == 1
    (failed,) = [line for line in result.out.splitlines() if "FAILED" in line]
    assert failed.startswith("v1") and named in failed
    assert "v2  ok" in result.out
    # The daemon and `models promote` load through the same registry: the copy's file again.
    with Store(copy / "regimed.db") as store, pytest.raises(ArtifactError, match=named):
        Registry(store).load("v1")

    again = run_cli("models", "verify", "--config", config(original))
    assert again.code == 0, again.out
    assert again.out.splitlines() == ["v1  ok", "v2  ok"]


# -- stores written with absolute paths ------------------------------------------------------


@pytest.fixture
def legacy(tmp_path, models) -> Path:
    """A state directory as an older regimed left it: schema version 4, the registry holding
    absolute artifact paths (and one bundle registered from outside the directory)."""
    state = tmp_path / "legacy"
    state.mkdir()
    db = Database(sqlite3.connect(state / "regimed.db"))
    migrate(db, target=4)
    outside = save_bundle(tmp_path / "elsewhere", "v9", models, {})
    rows = [
        (version, save_bundle(state / "models", version, models, {}))
        for version in ("v1", "v2")
    ] + [("v9", outside)]
    with db.conn:
        for k, (version, saved) in enumerate(rows):
            db.conn.execute(
                "INSERT INTO models (version, trained_at, sha256, path, status) "
                "VALUES (?, ?, ?, ?, 'candidate')",
                (version, (T0 + dt.timedelta(days=k)).isoformat(), saved.sha256, str(saved.path)),
            )
    db.conn.close()
    return state


def test_the_migration_makes_the_paths_of_the_state_directory_relative(legacy, tmp_path):
    with Store(legacy / "regimed.db") as store:
        paths = {m.version: m.path for m in Registry(store).models()}
    assert raw_paths(legacy / "regimed.db") == {
        "v1": "models/v1",
        "v2": "models/v2",
        "v9": str(tmp_path / "elsewhere" / "v9"),  # not regimed's layout: kept as it was
    }
    assert paths["v1"] == str(legacy / "models" / "v1")
    assert paths["v9"] == str(tmp_path / "elsewhere" / "v9")


def test_a_copy_made_before_the_upgrade_uses_its_own_artifacts(legacy, tmp_path, run_cli):
    copy = tmp_path / "restored"
    shutil.copytree(legacy, copy)  # its rows still name the legacy directory
    named = tamper_a_file(copy)
    result = run_cli("models", "verify", "--config", config(copy))
    assert result.code == 1  # a read-only command does not migrate: it names the file
    assert "schema version 4" in result.err and str(copy / "regimed.db") in result.err

    Store(copy / "regimed.db").close()  # what the daemon's start-up does: migrate
    result = run_cli("models", "verify", "--config", config(copy))
    assert result.code == 1
    (failed,) = [line for line in result.out.splitlines() if "FAILED" in line]
    assert failed.startswith("v1") and named in failed

    Store(legacy / "regimed.db").close()
    assert run_cli("models", "verify", "--config", config(legacy)).code == 0
