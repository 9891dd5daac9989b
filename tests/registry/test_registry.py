"""The model registry: rows with their artifacts, promotion history, rollback and the
`regimed models` commands, against real stores, real bundles and a real webhook server."""

from __future__ import annotations

import datetime as dt
import json
import stat
from functools import partial

import numpy as np
import pytest
from sqlite_utils import Database

from daemon.config import AlertsConfig, Secret
from daemon.errors import ArtifactError, ModelNotFoundError, StoreError
from daemon.monitor.alerts import send_alert
from daemon.registry.artifacts import artifacts_root, load_bundle, save_bundle
from daemon.registry.versions import Registry
from daemon.store.migrations import migrate
from daemon.store.sqlite import Store
from tests.factories import T0, make_data, register, serve_webhooks, tamper
from tests.size_limit import MODELS, run_python

UTC = dt.UTC
WEEK = dt.timedelta(days=7)


@pytest.fixture
def webhook():
    with serve_webhooks() as server:
        yield server


@pytest.fixture
def store(backend_store):
    return backend_store


@pytest.fixture
def registry(store, webhook):
    alerts = AlertsConfig(webhooks=(Secret(webhook.url("/ok")),), timeout_seconds=2.0)
    return Registry(store, alert=partial(send_alert, alerts))


# -- registering ---------------------------------------------------------------------------


def test_a_registered_version_has_its_row_and_its_verified_artifact(registry, store, models):
    record = register(registry, "v1", models)
    assert record.status == "candidate"
    assert record.path == str(artifacts_root(store.path) / "v1")
    assert record.trigger == "schedule"
    assert record.report["data_window"] == {"first": "2020-01-02", "last": "2023-12-29"}
    assert record.report["samples"]["archive"] == {"crash": 9}
    assert record.balanced_accuracy == 0.55
    assert record.accuracy == 0.6
    assert registry.models() == [record]
    assert registry.model("v1") == record
    assert registry.champion() is None
    loaded = load_bundle(record.path, record.sha256)
    assert loaded.meta == {"feature_version": 1}
    assert stat.S_IMODE(artifacts_root(store.path).stat().st_mode) == 0o700


def test_registering_with_a_gate_reason_promotes_in_the_same_step(registry, models):
    register(registry, "v1", models, promote_reason="gate passed: first model")
    record = register(
        registry, "v2", models, T0 + WEEK, promote_reason="gate passed: +0.02 balanced accuracy"
    )
    assert record.status == "champion"
    assert [(m.version, m.status) for m in registry.models()] == [
        ("v1", "retired"),
        ("v2", "champion"),
    ]
    history = registry.promotions()
    assert [(p.version, p.previous_version, p.reason) for p in history] == [
        ("v1", None, "gate passed: first model"),
        ("v2", "v1", "gate passed: +0.02 balanced accuracy"),
    ]


@pytest.mark.integration  # a child process
def test_a_save_the_disk_refuses_midway_leaves_neither_directory_nor_row(tmp_path):
    # The XGBoost model is written past the cap: write(2) fails as on a full disk.
    db = tmp_path / "regimed.db"
    done = run_python(
        MODELS
        + f"""
import datetime as dt
from daemon.errors import ArtifactError
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
with Store({str(db)!r}) as store:
    limit_writes(256 * 1024)
    try:
        Registry(store).register(
            "v1", models, trained_at=dt.datetime(2024, 1, 6, tzinfo=dt.UTC), trigger="manual",
            data_window=("2020-01-02", "2023-12-29"), sample_counts={{}},
        )
    except ArtifactError as exc:
        print(exc)
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("/xgboost.ubj: File too large")
    with Store(db, read_only=True) as store:
        assert Registry(store).models() == []
    assert list(artifacts_root(db).iterdir()) == []


def test_a_version_is_registered_once_and_its_first_bundle_is_kept(registry, models):
    first = register(registry, "v1", models)
    with pytest.raises(StoreError, match="model version 'v1' is already registered"):
        register(registry, "v1", models)
    assert registry.models() == [first]
    assert load_bundle(first.path, first.sha256).models


def test_a_rejected_candidate_is_kept_and_the_champion_cannot_be_rejected(registry, models):
    register(registry, "v1", models, promote_reason="gate passed: first model")
    register(registry, "v2", models, T0 + WEEK)
    assert registry.set_status("v2", "rejected").status == "rejected"
    assert registry.model("v2").status == "rejected"
    with pytest.raises(StoreError, match="'v1' is the champion; promote another version"):
        registry.set_status("v1", "rejected")


# -- promotion and rollback ----------------------------------------------------------------


def test_promotion_history_rollback_and_champion_at(registry, models):
    for i, version in enumerate(("v1", "v2", "v3")):
        register(registry, version, models, T0 + i * WEEK)
    assert registry.champion_at(T0) is None
    registry.promote("v1", reason="gate passed: first model", now=T0 + dt.timedelta(hours=1))
    registry.promote("v2", reason="gate passed: better", now=T0 + WEEK + dt.timedelta(hours=1))
    back = registry.promote(
        "v1", reason="manual rollback by regimed models promote", now=T0 + 2 * WEEK
    )
    assert back is not None
    assert (back.version, back.previous_version) == ("v1", "v2")
    assert registry.promote("v1", reason="again") is None  # already the champion: no new row
    assert [(p.version, p.previous_version) for p in registry.promotions()] == [
        ("v1", None),
        ("v2", "v1"),
        ("v1", "v2"),
    ]
    assert [(m.version, m.status) for m in registry.models()] == [
        ("v1", "champion"),
        ("v2", "retired"),
        ("v3", "candidate"),
    ]
    assert registry.champion_at(T0) is None
    assert registry.champion_at(T0 + dt.timedelta(hours=1)) == "v1"
    assert registry.champion_at(T0 + WEEK) == "v1"
    assert registry.champion_at(T0 + WEEK + dt.timedelta(hours=2)) == "v2"
    # the same instant in another time zone
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert registry.champion_at((T0 + 2 * WEEK).astimezone(new_york)) == "v1"
    assert registry.champion_at(T0 + 2 * WEEK - dt.timedelta(seconds=1)) == "v2"
    with pytest.raises(StoreError, match="time zone-aware"):
        registry.champion_at(dt.datetime(2024, 1, 1))


def test_promoting_an_unknown_version_changes_nothing(registry, models):
    register(registry, "v1", models, promote_reason="gate passed")
    with pytest.raises(ModelNotFoundError, match="model version 'v9' is not registered"):
        registry.promote("v9", reason="manual")
    assert registry.champion().version == "v1"
    assert len(registry.promotions()) == 1


def test_promoting_a_tampered_artifact_is_refused_and_alerts(registry, models, webhook):
    register(registry, "v1", models, promote_reason="gate passed")
    v2 = register(registry, "v2", models, T0 + WEEK)
    target = tamper(v2)
    with pytest.raises(ArtifactError, match=rf"artifact refused \(promotion\): {target}: sha256"):
        registry.promote("v2", reason="manual")
    assert registry.champion().version == "v1"
    assert [p.version for p in registry.promotions()] == ["v1"]
    assert webhook.events() == ["artifact_refused"]
    details = webhook.received[0][2]["details"]
    assert details["version"] == "v2"
    assert str(target) in details["problems"][0]


def test_loading_verifies_and_a_tampered_champion_is_refused_with_an_alert(registry, models):
    record = register(registry, "v1", models, promote_reason="gate passed")
    X, _ = make_data()
    loaded_record, bundle = registry.load()
    assert loaded_record == record
    assert np.array_equal(
        bundle.models["xgboost"].predict_proba(X), models["xgboost"].predict_proba(X)
    )
    (tamper(record).parent).chmod(0o777)
    with pytest.raises(ArtifactError, match=r"artifact refused \(loading\): .*writable by others"):
        registry.load("v1")


def test_verify_reports_every_artifact_and_alerts_once(registry, models, webhook):
    register(registry, "v1", models)
    v2 = register(registry, "v2", models, T0 + WEEK)
    assert registry.verify() == {"v1": [], "v2": []}
    assert webhook.received == []
    tamper(v2, "xgboost.ubj")
    results = registry.verify()
    assert results["v1"] == []
    assert len(results["v2"]) == 1
    assert "xgboost.ubj: sha256" in results["v2"][0]
    assert webhook.events() == ["artifact_verification_failed"]


def test_the_registry_alerts_only_through_the_callback_it_is_handed(store, models):
    sent = []
    alerting = Registry(store, alert=lambda *alert: sent.append(alert))
    record = register(alerting, "v1", models, promote_reason="gate passed")
    tamper(record)
    with pytest.raises(ArtifactError, match=r"artifact refused \(loading\)"):
        Registry(store).load()  # no callback: logged and raised only
    assert sent == []
    with pytest.raises(ArtifactError, match=r"artifact refused \(loading\)"):
        alerting.load()
    ((event, summary, details),) = sent
    assert (event, summary) == ("artifact_refused", "model v1: artifact refused during loading")
    assert details["version"] == "v1" and details["problems"]


# -- promotions and the migration -----------------------------------------------------------


def test_a_promotion_without_the_artifact_check_is_recorded_and_a_status_can_be_set(store):
    registry = Registry(store)
    registry.add_model("v1", trained_at=T0, sha256="a" * 64, path="m/v1")
    registry.promote("v1", reason="gate passed: test", check_artifact=False)
    history = registry.promotions()
    assert [(p.version, p.reason) for p in history] == [("v1", "gate passed: test")]
    registry.add_model("v2", trained_at=T0, sha256="b" * 64, path="m/v2")
    registry.set_status("v2", "rejected")
    assert Registry(store).models()[1].status == "rejected"


def test_the_promotions_migration_records_an_existing_champion(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    try:
        migrate(db, target=3)
        db.execute(
            "INSERT INTO models (version, trained_at, sha256, path, status) VALUES "
            "('old', '2023-06-03T21:00:00+00:00', 'x', 'p', 'champion')"
        )
        db.conn.commit()
    finally:
        db.close()
    with Store(path) as store:
        history = Registry(store).promotions()
        assert [(p.version, p.previous_version) for p in history] == [("old", None)]
        assert history[0].promoted_at == dt.datetime(2023, 6, 3, 21, tzinfo=UTC)
        assert "promotion history began" in history[0].reason
        assert Registry(store).champion_at(T0) == "old"


# -- regimed models ------------------------------------------------------------------------


@pytest.fixture
def cli_setup(tmp_path, models, webhook):
    """A configuration whose store holds v1 (champion) and v2 (candidate), alerts to the local
    webhook server."""
    db = tmp_path / "regimed.db"
    config = tmp_path / "regimed.toml"
    config.write_text(
        f'[store]\npath = "{db}"\n\n[alerts]\nwebhooks = ["{webhook.url("/ok/secret")}"]\n'
        "timeout_seconds = 2.0\n"
    )
    with Store(db) as store:
        registry = Registry(store)
        register(registry, "v1", models, promote_reason="gate passed: first model")
        register(registry, "v2", models, T0 + WEEK, trigger="drift")
    return str(config), db


def cli_setup_sha(cli_setup):
    with Store(cli_setup[1], read_only=True) as store:
        return Registry(store).model("v1").sha256


def test_models_list_prints_a_table_and_json(run_cli, cli_setup):
    config, _ = cli_setup
    result = run_cli("models", "list", "--config", config)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "version", "trained_at", "status", "promoted", "bal_acc", "sha256",
    ]  # fmt: skip
    first = lines[1].split()
    assert first[:4] == ["*", "v1", "2024-01-06T21:00+00:00", "champion"]
    assert first[5:] == ["0.5500", cli_setup_sha(cli_setup)[:12]]
    assert lines[2].split()[:4] == ["v2", "2024-01-13T21:00+00:00", "candidate", "-"]

    result = run_cli("models", "list", "--json", "--config", config)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert [(m["version"], m["status"], m["champion"]) for m in doc] == [
        ("v1", "champion", True),
        ("v2", "candidate", False),
    ]
    assert doc[1]["trigger"] == "drift"
    assert doc[0]["balanced_accuracy"] == 0.55
    assert len(doc[0]["promoted_at"]) == 1
    assert len(doc[0]["sha256"]) == 64


def test_models_promote_and_roll_back(run_cli, cli_setup):
    config, db = cli_setup
    result = run_cli("models", "promote", "v2", "--config", config)
    assert result.code == 0, result.err
    assert "v2 is now the champion (was v1)" in result.out
    result = run_cli("models", "promote", "v1", "--config", config)
    assert result.code == 0, result.err
    assert "recorded: manual rollback by regimed models promote" in result.out
    assert run_cli("models", "promote", "v1", "--config", config).out.startswith(
        "v1 is already the champion"
    )
    with Store(db, read_only=True) as store:
        reasons = [(p.version, p.reason) for p in Registry(store).promotions()]
    assert reasons == [
        ("v1", "gate passed: first model"),
        ("v2", "manual promotion by regimed models promote"),
        ("v1", "manual rollback by regimed models promote"),
    ]


def test_models_promote_of_an_unknown_version_is_a_usage_error(run_cli, cli_setup):
    config, db = cli_setup
    result = run_cli("models", "promote", "v9", "--config", config)
    assert result.code == 2
    assert "model version 'v9' is not registered (see `regimed models list`)" in result.err
    with Store(db, read_only=True) as store:
        assert Registry(store).champion().version == "v1"


def test_models_verify_passes_then_fails_on_a_tampered_file_and_alerts(run_cli, cli_setup, webhook):
    config, db = cli_setup
    result = run_cli("models", "verify", "--config", config)
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["v1  ok", "v2  ok"]
    assert webhook.received == []

    with Store(db, read_only=True) as store:
        target = tamper(Registry(store).model("v2"), "xgboost.ubj")
    result = run_cli("models", "verify", "--config", config)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0] == "v1  ok"
    assert lines[1].startswith(f"v2  FAILED  {target}: sha256 ")
    assert "1 of 2 artifacts failed verification" in result.err
    assert webhook.events() == ["artifact_verification_failed"]
    assert webhook.received[0][0] == "/ok/secret"
    assert "v2" in webhook.received[0][2]["details"]["problems"]


def test_models_verify_lists_a_bundle_with_no_registry_row_without_failing(
    run_cli, cli_setup, models, webhook
):
    """A retrain killed between writing its bundle and registering it leaves a directory
    no row points at: verify names it (it may be another store's, so it is not removed)."""
    config, db = cli_setup
    stray = db.parent / "models" / "v3"
    save_bundle(stray.parent, "v3", models, {})
    result = run_cli("models", "verify", "--config", config)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == ["v1  ok", "v2  ok"]
    assert lines[2].startswith(f"v3  unregistered  {stray}: no registry row in this store")
    assert webhook.received == []
    assert stray.is_dir()


def test_models_promote_of_a_tampered_artifact_exits_1_and_alerts(run_cli, cli_setup, webhook):
    config, db = cli_setup
    with Store(db, read_only=True) as store:
        v2 = Registry(store).model("v2")
    (tamper(v2).parent / "logistic_regression.skops").chmod(0o606)
    result = run_cli("models", "promote", "v2", "--config", config)
    assert result.code == 1
    assert "artifact refused (promotion)" in result.err
    assert webhook.events() == ["artifact_refused"]
    with Store(db, read_only=True) as store:
        assert Registry(store).champion().version == "v1"


def test_models_without_an_action_or_a_store_is_a_usage_error(run_cli, tmp_path):
    assert run_cli("models").code == 2
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    for action in (["list"], ["verify"], ["promote", "v1"]):
        result = run_cli("models", *action, "--config", str(config))
        assert result.code == 2, action
        assert "no database there yet" in result.err
    assert not (tmp_path / "none.db").exists()


def test_models_list_of_an_empty_registry(run_cli, tmp_path):
    db = tmp_path / "regimed.db"
    Store(db).close()
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    result = run_cli("models", "list", "--config", str(config))
    assert (result.code, result.out) == (0, "no registered models\n")
    result = run_cli("models", "verify", "--config", str(config))
    assert (result.code, result.out) == (0, "no registered models\n")
