"""A whole retrain on real data: the bundled S&P 500 and NASDAQ as live samples plus the
bundled archive, through split, sampling, eight fits, validation, gate and registry."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Config, LabelConfig, ModelsConfig, StoreConfig
from daemon.config.training import LightGBMConfig, RandomForestConfig
from daemon.errors import RetrainBusy, RetrainFailed
from daemon.registry.serving import load_champion
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from daemon.training.archive import build_archive
from daemon.training.lock import retrain_lock
from daemon.training.report import RetrainReport
from daemon.training.trainer import retrain
from tests.factories import copy_store, label_by_feature, store_history

VOLATILE = ("version", "duration_seconds", "peak_rss_bytes", "artifact", "fit_seconds")


#: Small models for the tests that are about the trainer's logic, not the models' quality.
FAST_MODELS = ModelsConfig(
    random_forest=RandomForestConfig(n_estimators=20),
    lightgbm=LightGBMConfig(n_estimators=30),
)


def _config(path: Path, *, fast: bool = True, **training: object) -> Config:
    config = Config().replace(store=StoreConfig(path=str(path)))
    if fast:
        config = config.replace(models=FAST_MODELS)
    if training:
        config = config.replace(training=dataclasses.replace(config.training, **training))
    return config


@pytest.fixture(scope="session")
def bundled_db(tmp_path_factory, sp500, nasdaq, vix) -> Path:
    """A store holding the bundled history as live samples and the bundled archive."""
    path = tmp_path_factory.mktemp("bundled") / "regimed.db"
    config = _config(path)
    store_history(config, {"^GSPC": sp500, "^IXIC": nasdaq}, vix)
    with Store.open(config.store) as store:
        build_archive(config, store, "bundled")
    return path


@pytest.fixture
def db(bundled_db, tmp_path) -> Path:
    """A private copy of the bundled store."""
    return copy_store(bundled_db, tmp_path)


def _stable(report: dict) -> dict:
    """The report without what legitimately changes between runs (names, times)."""
    out = json.loads(json.dumps(report))
    for key in VOLATILE:
        out.pop(key, None)
    for cell in out["validation"]["models"].values():
        cell.pop("fit_seconds", None)
    return out


def test_retrain_on_the_bundled_history_reports_per_regime_and_registers(db):
    config = _config(db, fast=False)  # the default configuration
    typed = retrain(config, trigger="manual")
    report = typed.to_json()
    # the typed report and its JSON carry the same: parsing the JSON back gives it again
    assert RetrainReport.from_json(report) == typed
    assert json.dumps(RetrainReport.from_json(report).to_json()) == json.dumps(report)

    training = report["training"]
    assert training["weight_share"]["crash"] == pytest.approx(0.171, abs=5e-4)
    assert training["weight_share"]["recovery"] == pytest.approx(0.128, abs=5e-4)
    assert training["weight_share"]["normal"] == pytest.approx(0.342, abs=5e-4)
    assert training["effective_size_ratio"] == pytest.approx(1.17, abs=5e-3)
    after = training["regime_counts_after"]
    total = sum(after.values())
    assert after["crash"] / total == pytest.approx(0.10, abs=1e-3)

    validation = report["validation"]
    assert set(validation["per_regime"]) == {
        "low_volatility", "normal", "high_volatility", "crash", "recovery",
    }  # fmt: skip
    n = sum(cell["n"] for cell in validation["per_regime"].values())
    assert n == validation["overall"]["n"] == report["split"]["validation_rows"]
    for cell in validation["per_regime"].values():
        if cell["n"] < config.training.min_score_samples:
            assert cell["balanced_accuracy"] is None and cell["accuracy"] is None
        else:
            assert 0.0 <= cell["balanced_accuracy"] <= 1.0
    assert set(validation["models"]) == set(config.training.models) | {"ensemble"}
    assert set(validation["baselines"]) == {"always_up", "training_majority", "previous_return"}
    # always up: balanced accuracy exactly one half, accuracy the share of up labels
    assert validation["baselines"]["always_up"]["balanced_accuracy"] == pytest.approx(0.5)
    assert 0.5 < validation["baselines"]["always_up"]["accuracy"] < 0.7
    assert sum(report["ensemble"]["weights"].values()) == pytest.approx(1.0)

    # no champion yet: the naive references decide, in words
    assert report["gate"]["rule"] in {"no_champion", "naive_edge"}
    assert isinstance(report["promoted"], bool) and report["reason"]
    edge = report["gate"]["edge"]
    low, high = edge["interval"]
    assert low <= edge["difference"] <= high
    assert f"{edge['difference']:+.3f} [{low:+.3f}, {high:+.3f}] over" in report["reason"]
    assert ("no skill shown" in report["reason"]) == (not report["promoted"])
    # AUC and the Brier score beside balanced accuracy, each with its interval
    skill = report["skill"]
    assert set(skill) == {"candidate", "always_up", "training_majority", "previous_return"}
    for who in skill.values():
        assert set(who) == {"balanced_accuracy", "accuracy", "auc", "brier"}
    assert skill["always_up"]["auc"]["value"] == pytest.approx(0.5)
    auc = skill["candidate"]["auc"]
    assert auc["interval"][0] <= auc["value"] <= auc["interval"][1]
    assert 0.0 < skill["candidate"]["brier"]["value"] < 0.5

    with Store.open(config.store) as store:
        (model,) = Registry(store).models()
        run = Registry(store).last_retrain_run()
        champion = Registry(store).champion()
    assert model.version == report["version"]
    assert model.sha256 == report["artifact"]["sha256"]
    assert run is not None and run.version == report["version"] and run.trigger == "manual"
    assert run.promoted == report["promoted"]
    assert (champion is not None) == report["promoted"]
    artifact = Path(report["artifact"]["path"])
    assert artifact.parent == db.parent / "models"
    for file in artifact.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # the drift reference of the training rows travels with the model
    from daemon.monitor.drift import Reference

    manifest = json.loads((artifact / "manifest.json").read_text())
    reference = Reference.from_dict(manifest["meta"]["drift_reference"])
    assert {"low_volatility", "normal", "crash"} <= set(reference.regimes)


def test_a_rerun_on_the_same_data_and_seed_gives_the_same_metrics(db):
    config = _config(db, models=("random_forest", "lightgbm", "logistic_regression"))
    first = retrain(config).to_json()
    second = retrain(config).to_json()
    a, b = _stable(first), _stable(second)
    for key in ("champion", "gate", "promoted", "reason", "outcome", "windows"):
        a.pop(key), b.pop(key)
    assert a == b
    for stage in ("fit", "vote", "validation"):  # the refit follows the gate's decision
        assert first["windows"][stage] == second["windows"][stage]
    # the same model as the champion (or, rejected, as the last candidate): nothing new
    assert second["gate"]["rule"] == "unchanged"
    if first["promoted"]:
        assert second["champion"]["overall"] == second["validation"]["overall"]


def test_a_retrain_on_unchanged_data_adds_no_version(db):
    config = _config(db, models=("lightgbm", "logistic_regression"))
    label_by_feature(config, "macd_hist")  # learnable: the first candidate shows skill
    first = retrain(config, trigger="manual")
    assert first.promoted, first.reason
    second = retrain(config, trigger="schedule")
    assert (second.promoted, second.outcome, second.version) == (False, "unchanged", None)
    assert second.gate is not None and second.gate.rule == "unchanged"
    assert second.artifact is None
    assert "no version added" in (second.reason or "")
    assert RetrainReport.from_json(second.to_json()) == second
    with Store.open(config.store) as store:
        registry = Registry(store)
        assert [m.version for m in registry.models()] == [first.version]
        champion = registry.champion()
        run = registry.last_retrain_run()
    assert champion is not None and champion.version == first.version
    assert run is not None and run.trigger == "schedule" and run.version is None
    assert run.report["outcome"] == "unchanged" and not run.promoted
    bundles = [p for p in (db.parent / "models").iterdir() if not p.name.startswith(".")]
    assert len(bundles) == 1


def test_a_worse_candidate_is_not_promoted(db):
    config = _config(db, models=("random_forest", "lightgbm", "logistic_regression"))
    # Labels 1 exactly when the 5-day return feature... is not known yet; make the task
    # learnable instead: the label is the sign of the MACD histogram (not the sign of the past
    # return: that is the previous_return reference, which a candidate must beat).
    with Store.open(config.store) as store:
        store._conn.execute("UPDATE samples SET label = 0")
    label_by_feature(config, "macd_hist")
    first = retrain(config).to_json()
    assert first["promoted"], first["reason"]
    assert first["validation"]["overall"]["balanced_accuracy"] > 0.9
    # Now train on noise: the training part's labels are shuffled, validation keeps the truth.
    cutoff = first["split"]["cutoff"]
    with Store.open(config.store) as store:
        rows = store._conn.execute(
            "SELECT source, symbol, ts FROM samples WHERE ts < ?", (cutoff,)
        ).fetchall()
        rng = np.random.default_rng(7)
        labels = rng.integers(0, 2, len(rows))
        with store._conn:
            store._conn.executemany(
                "UPDATE samples SET label = ? WHERE source = ? AND symbol = ? AND ts = ?",
                [(int(lab), *row) for lab, row in zip(labels, rows, strict=True)],
            )
    second = retrain(config).to_json()
    assert not second["promoted"]
    assert second["gate"]["rule"] in {"naive_edge", "overall", "regime_drop"}
    assert second["validation"]["overall"]["balanced_accuracy"] < 0.6
    with Store.open(config.store) as store:
        champion = Registry(store).champion()
        run = Registry(store).last_retrain_run()
    assert champion is not None and champion.version == first["version"]
    assert run is not None and not run.promoted


def test_a_model_that_fails_fails_the_run_and_keeps_the_champion(db, monkeypatch):
    import lightgbm

    config = _config(db, models=("logistic_regression", "lightgbm"))

    def broken(self, *args, **kwargs):
        raise ValueError("simulated failure inside LightGBM")

    monkeypatch.setattr(lightgbm.LGBMClassifier, "fit", broken)
    with pytest.raises(RetrainFailed, match="lightgbm") as caught:
        retrain(config)
    assert caught.value.report["outcome"] == "failed"
    assert RetrainReport.from_json(caught.value.report).to_json() == caught.value.report
    with Store.open(config.store) as store:
        assert Registry(store).champion() is None and Registry(store).models() == []
        run = Registry(store).last_retrain_run()
    assert run is not None and not run.promoted and "lightgbm" in run.reason

    optional = _config(
        db, models=("logistic_regression", "lightgbm"), optional_models=("lightgbm",)
    )
    report = retrain(optional).to_json()
    assert "lightgbm" in report["failed_models"]
    assert set(report["ensemble"]["weights"]) == {"logistic_regression"}


def test_a_second_retrain_is_refused_while_one_runs(db, run_cli):
    config = _config(db)
    with retrain_lock(config.store.path):
        with pytest.raises(RetrainBusy, match=f"pid {os.getpid()}"):
            retrain(config)
        toml = db.parent / "config.toml"
        toml.write_text(f'[store]\npath = "{db}"\n')
        result = run_cli("retrain", "--config", str(toml))
    assert result.code == 1
    assert "another retrain is running" in result.err


def test_cli_retrain_json_has_the_report_keys(db, run_cli):
    toml = db.parent / "config.toml"
    toml.write_text(
        f'[store]\npath = "{db}"\n[training]\nmodels = ["logistic_regression", "lightgbm"]\n'
    )
    result = run_cli("retrain", "--json", "--config", str(toml))
    assert result.code == 0, result.err
    report = json.loads(result.out)
    for key in ("version", "trigger", "duration_seconds", "promoted", "reason"):
        assert key in report
    assert set(report["training"]) >= {
        "regime_counts_before", "regime_counts_after", "weight_share", "effective_size_ratio",
    }  # fmt: skip
    assert set(report["validation"]) >= {"per_regime", "overall", "baselines", "models"}
    for cell in report["validation"]["models"].values():
        assert set(cell) >= {"accuracy", "balanced_accuracy", "fit_seconds"}
    windows = report["windows"]  # the days and rows each stage saw
    for stage in ("fit", "vote", "validation"):
        assert set(windows[stage]) == {"first", "last", "rows"}
    # (validation's first day may be a held-out archive event's, before the others)
    assert windows["fit"]["last"] < windows["vote"]["first"]
    assert windows["vote"]["last"] < report["split"]["cutoff"] <= windows["validation"]["last"]
    assert "refit" in windows and "refit_fit_seconds" in windows

    text = run_cli("retrain", "--config", str(toml))
    assert text.code == 0, text.err
    assert "balanced accuracy" in text.out and "decision:" in text.out
    assert "what each stage saw" in text.out


def test_cli_retrain_without_a_store_is_a_usage_error(run_cli, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text(f'[store]\npath = "{tmp_path / "absent.db"}"\n')
    result = run_cli("retrain", "--config", str(toml))
    assert result.code == 2
    assert "store.path" in result.err


def test_a_retrain_removes_what_a_killed_save_left_behind(db, caplog):
    import logging

    config = _config(db, models=("logistic_regression",))
    models = db.parent / "models"
    models.mkdir(exist_ok=True)
    stale = models / ".tmp-20261121T210000Z-abcd"
    (stale / "partial").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="daemon.training.trainer"):
        report = retrain(config).to_json()
    assert not stale.exists()
    assert "killed while saving" in caplog.text
    assert Path(report["artifact"]["path"]).is_dir()  # the new bundle is untouched
    assert [p.name for p in models.iterdir() if p.name.startswith(".tmp-")] == []


def test_without_a_champion_a_rerun_adds_no_second_rejected_version(db):
    config = _config(db, models=("logistic_regression",))
    config = config.replace(gate=dataclasses.replace(config.gate, min_edge=0.5))  # unreachable
    first = retrain(config)
    assert (first.promoted, first.gate.rule if first.gate else None) == (False, "naive_edge")
    assert "no skill shown" in (first.reason or "")
    second = retrain(config)
    assert (second.outcome, second.version) == ("unchanged", None)
    assert f"those of the last candidate {first.version}" in (second.reason or "")
    with Store.open(config.store) as store:
        assert [m.version for m in Registry(store).models()] == [first.version]
        assert Registry(store).champion() is None


def test_a_retrain_fits_only_the_samples_of_the_configured_target(db, caplog):
    caplog.set_level(logging.WARNING)
    config = _config(db, models=("lightgbm", "logistic_regression"))
    direction = retrain(config).to_json()
    assert direction["samples"]["archive"] > 0
    volatility = dataclasses.replace(config, label=LabelConfig(target="volatility"))
    with Store.open(config.store) as store:
        if not direction["promoted"]:
            Registry(store).promote(direction["version"], reason="a direction champion")
        assert load_champion(config, store) is not None
        assert load_champion(volatility, store) is None  # trained for another target
    report = retrain(volatility).to_json()
    assert report["champion"] is None  # not judged against a direction model
    # the live samples were relabelled for volatility; the direction archive stays out
    assert report["samples"]["archive"] == 0
    assert (direction["target"], report["target"]) == (
        "direction:h=5:threshold=0",
        "volatility:h=5:window=21",
    )
    assert report["samples"]["live"] == direction["samples"]["live"]
    assert "`regimed archive build`" in caplog.text
    with Store.open(volatility.store) as store:
        meta, _ = store.read_samples(source="live", target=volatility.label.key)
        assert len(meta) == report["samples"]["live"]


def test_a_retrain_on_a_postgresql_store_reports_what_sqlite_does(db, tmp_path, postgres_url):
    """The same rows in PostgreSQL (copied by `copy_store`): the same report, and the new
    version's files in the database for the other hosts."""
    from daemon.store.postgres import PostgresStore
    from daemon.store.transfer import copy_store as copy_into

    with Store(db) as source, PostgresStore(postgres_url, path=str(db)) as target:
        copy_into(source, target)
    host = tmp_path / "pg-host"
    host.mkdir()
    models = ("random_forest", "lightgbm", "logistic_regression")
    on_sqlite = retrain(_config(db, models=models)).to_json()
    pg_config = _config(host / "regimed.db", models=models)
    pg_config = pg_config.replace(store=dataclasses.replace(pg_config.store, url=postgres_url))
    on_postgres = retrain(pg_config).to_json()
    assert _stable(on_postgres) == _stable(on_sqlite)
    with PostgresStore.connect(pg_config.store) as store, store.transaction("r", write=False) as c:
        files = c.execute(
            "SELECT file FROM model_files WHERE version = ?", (on_postgres["version"],)
        ).fetchall()
    assert ("manifest.json",) in files
