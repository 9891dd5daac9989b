"""The commands on a PostgreSQL store (`store.url`), through `regimed`'s own entry point: one host
builds the archive and retrains, another host sees, verifies, reports and promotes the models
from the same database, with no file shared between them. `regimed status` and `regimed
predictions` run on both backends in their own suites (backend_store), `regimed store migrate`
in test_store_migrate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.config import Config, StoreConfig
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from tests.factories import live_history, register, store_history, write_live_store

pytestmark = pytest.mark.integration  # a real PostgreSQL server

#: One fast model and a gate that promotes a first model that shows any skill.
FAST = """
[training]
models = ["logistic_regression"]
n_jobs = 1

[gate]
bootstrap_samples = 100
min_edge = -1.0
"""


def host_config(tmp_path: Path, name: str, url: str) -> Path:
    """The configuration file of host `name`: its own local anchor, the shared database."""
    directory = tmp_path / name
    directory.mkdir()
    path = directory / "regimed.toml"
    path.write_text(f'[store]\npath = "{directory / "regimed.db"}"\nurl = "{url}"\n{FAST}')
    return path


def test_retrain_on_one_host_then_models_report_and_status_on_another(
    run_cli, tmp_path, postgres_url, sp500, vix, models
):
    host_a = host_config(tmp_path, "host-a", postgres_url)
    host_b = host_config(tmp_path, "host-b", postgres_url)
    store = StoreConfig(path=str(tmp_path / "host-a" / "regimed.db"), url=postgres_url)
    store_history(Config(store=store), {"^GSPC": sp500.iloc[-1500:]}, vix)

    built = run_cli("archive", "build", "--config", str(host_a))
    assert built.code == 0, built.err
    assert "stored 500 archive samples: 500 new, 0 replaced, 0 unchanged" in built.out
    trained = run_cli("retrain", "--json", "--config", str(host_a))
    assert trained.code == 0, trained.err
    report = json.loads(trained.out)
    assert report["promoted"] is True, report["reason"]
    version = report["version"]
    assert report["ran_by"].startswith("regimed-")

    listed = run_cli("models", "list", "--json", "--config", str(host_b))
    assert listed.code == 0, listed.err
    assert [(m["version"], m["status"], m["champion"]) for m in json.loads(listed.out)] == [
        (version, "champion", True)
    ]
    verified = run_cli("models", "verify", "--config", str(host_b))
    assert (verified.code, verified.out) == (0, f"{version}  ok\n"), verified.err
    assert (tmp_path / "host-b" / "models" / version / "manifest.json").is_file()

    page = run_cli("report", "--config", str(host_b))
    assert page.code == 0, page.err
    assert page.out.strip() == str(tmp_path / "host-b" / "reports" / f"{version}.html")
    assert "<svg" in Path(page.out.strip()).read_text()
    stored = run_cli("report", version, "--json", "--config", str(host_b))
    assert json.loads(stored.out)["validation"] == report["validation"]

    status = run_cli("status", "--json", "--config", str(host_b))
    assert status.code == 0, status.err
    doc = json.loads(status.out)
    assert doc["champion"]["version"] == version
    last = doc["last_retrain"]
    assert (last["version"], last["trigger"], last["promoted"]) == (version, "manual", True)
    assert sum(doc["samples"]["archive"].values()) == 500
    assert sum(doc["samples"]["live"].values()) > 1000

    # A version registered elsewhere is promoted, and rolled back, from host B.
    with Store.open(store) as shared:
        register(Registry(shared), "v2", models)
    promoted = run_cli("models", "promote", "v2", "--config", str(host_b))
    assert promoted.code == 0, promoted.err
    assert f"v2 is now the champion (was {version})" in promoted.out
    back = run_cli("models", "promote", version, "--config", str(host_a))
    assert back.code == 0, back.err
    assert "manual rollback" in back.out
    with Store.open(store, read_only=True) as shared:
        assert [p.version for p in Registry(shared).promotions()] == [version, "v2", version]


def test_evaluate_runs_with_a_postgresql_configuration(run_cli, tmp_path, postgres_url):
    """`regimed evaluate` reads histories, not the store: a `store.url` configuration is no
    obstacle, and the database is left untouched."""
    config = host_config(tmp_path, "host", postgres_url)
    out = tmp_path / "evaluation"
    result = run_cli(
        "evaluate", "--config", str(config), "--out", str(out), "--json", "--step", "year",
        "--start", "2010-01-01", "--end", "2011-01-01", "--models", "logistic_regression",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["folds"]) == 1
    assert (out / "evaluation.html").is_file()


def test_predictions_and_the_live_report_read_the_same_from_either_backend(
    run_cli, tmp_path, postgres_url
):
    """A single-host store moved into PostgreSQL: `regimed predictions` and `regimed report
    --live` print from the database what they print from the SQLite file."""
    single = tmp_path / "single"
    single.mkdir()
    rows = live_history("2020-01-06", 60)
    write_live_store(single / "regimed.db", rows, matured=len(rows) - 10)
    (single / "regimed.toml").write_text(f'[store]\npath = "{single / "regimed.db"}"\n{FAST}')
    moved = run_cli("store", "migrate", "--from", str(single / "regimed.db"), "--to", postgres_url)
    assert moved.code == 0, moved.err
    shared = host_config(tmp_path, "host", postgres_url)
    for command in (["predictions", "--json"], ["report", "--live", "--json"]):
        on_sqlite = run_cli(*command, "--config", str(single / "regimed.toml"))
        on_postgres = run_cli(*command, "--config", str(shared))
        assert (on_sqlite.code, on_postgres.code) == (0, 0), on_postgres.err
        assert json.loads(on_postgres.out) == json.loads(on_sqlite.out), command
    assert len(json.loads(on_sqlite.out)["per_regime"]) == 5  # the live report, with content
