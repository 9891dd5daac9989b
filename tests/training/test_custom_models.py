"""Custom models (docs/models.md): a `[models.NAME]` table with a factory, through config check,
retrain (sampling, weights, validation, vote, gate), artifact, serving and live scoring; and
every refusal with its message.

Two custom models: scikit-learn's `LogisticRegression` by factory path, and `WeightedCentroid`,
defined here. This module is importable as `tests.training.test_custom_models` wherever the
repository root is on the path: pytest puts it there, and the subprocess test sets PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import Config, StoreConfig, parse_config
from daemon.errors import ArtifactError, ConfigError
from daemon.monitor.live import LiveScorer
from daemon.registry.artifacts import load_bundle, save_bundle
from daemon.registry.serving import load_champion
from daemon.registry.versions import Registry
from daemon.runtime.retrain_child import config_document, config_from_document
from daemon.store.sqlite import Store
from daemon.training.custom import check_custom_models
from daemon.training.trainer import retrain
from tests.factories import copy_store, store_history

HERE = "tests.training.test_custom_models"
CENTROID = f"{HERE}.WeightedCentroid"
ROOT = Path(__file__).resolve().parents[2]


class WeightedCentroid:
    """P(up) from the distances to the weighted mean row of each class: a small classifier of
    the user's own, with the `fit(X, y, sample_weight=...)` and `predict_proba` regimed needs."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> WeightedCentroid:
        x, labels = np.asarray(X, dtype=np.float64), np.asarray(y)
        w = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight)
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0) + 1e-9
        z = (x - self.mean_) / self.std_
        self.classes_ = np.array([0, 1])
        self.centroids_ = np.vstack(
            [np.average(z[labels == c], axis=0, weights=w[labels == c]) for c in (0, 1)]
        )
        return self

    def predict_proba(self, X: Any) -> Any:
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.std_
        d = ((z[:, None, :] - self.centroids_[None, :, :]) ** 2).mean(axis=2)
        logits = -self.scale * d
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class NoProba:
    """An estimator without `predict_proba`."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> NoProba:
        return self


class NoWeights:
    """An estimator whose `fit` takes no `sample_weight`."""

    def fit(self, X: Any, y: Any) -> NoWeights:
        return self

    def predict_proba(self, X: Any) -> Any:
        return np.full((len(X), 2), 0.5)


def _toml(
    db: Path | None = None, models: str = '"sk_logistic", "centroid"', extra: str = ""
) -> str:
    store = "" if db is None else f'[store]\npath = "{db}"\n'
    return (
        f"{store}[training]\nmodels = [{models}]\n"
        "[gate]\nmin_edge = -1.0\n"  # promote whatever shows: the test is about the plumbing
        "[models.sk_logistic]\n"
        'factory = "sklearn.linear_model:LogisticRegression"\n'
        "max_iter = 300\nC = 0.5\n"
        "[models.centroid]\n"
        f'factory = "{HERE}:WeightedCentroid"\n'
        f'trusted = ["{CENTROID}"]\n'
        "scale = 2.0\n"
        f"{extra}"
    )


# -- configuration --------------------------------------------------------------------------


def test_a_custom_model_table_is_parsed_and_written_back():
    config = parse_config(_toml(), env={})
    sk, centroid = config.models.custom
    assert (sk.name, sk.factory, sk.trusted) == (
        "sk_logistic", "sklearn.linear_model:LogisticRegression", (),
    )  # fmt: skip
    assert sk.kwargs == {"max_iter": 300, "C": 0.5}
    assert centroid.trusted == (CENTROID,) and centroid.kwargs == {"scale": 2.0}
    assert config.training.models == ("sk_logistic", "centroid")
    assert config.models.trusted_types() == {"sk_logistic": (), "centroid": (CENTROID,)}
    text = config.to_toml()
    assert "[models.centroid]\n" in text
    again = parse_config(text, env={})
    assert again == config
    assert type(again.models.custom[1].kwargs["scale"]) is float  # 2.0 is written as 2.0
    check_custom_models(config)  # both import and pass
    # as the daemon hands it to its retrain process, through JSON
    document = json.loads(json.dumps(config_document(config)))
    assert config_from_document(document) == config


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[training]\nmodels = ["mine"]\n',
            'training.models[0] = "mine": expected one of random_forest, ',
        ),
        (
            '[models.mine]\nfactory = "no colon here"\n',
            'models.mine.factory = "no colon here": expected "package.module:callable"',
        ),
        (
            '[models.mine]\nfactory = "a.b:C"\ntrusted = ["NoDot"]\n',
            'models.mine.trusted[0] = "NoDot": expected a dotted type name',
        ),
        ("[models.mine]\nC = 1.0\n", "models.mine: unknown key"),
        (
            '[models.Bad-Name]\nfactory = "a.b:C"\n',
            "[models.Bad-Name]: a custom model's name must be",
        ),
    ],
)
def test_a_malformed_custom_model_is_refused_naming_the_key(toml, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(toml, env={})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (
            "no_such_package.models:Thing",
            "models.mine.factory = 'no_such_package.models:Thing': cannot import "
            "no_such_package.models: ModuleNotFoundError",
        ),
        (f"{HERE}:Missing", f"{HERE} has no attribute Missing"),
        (f"{HERE}:NoProba", "the estimator NoProba from"),
        (f"{HERE}:NoWeights", "its fit takes no sample_weight"),
    ],
)
def test_check_config_refuses_a_model_that_cannot_work(run_cli, tmp_path, factory, reason):
    toml = tmp_path / "config.toml"
    toml.write_text(f'[training]\nmodels = ["mine"]\n[models.mine]\nfactory = "{factory}"\n')
    result = run_cli("check-config", "--config", str(toml))
    assert result.code == 2
    assert "models.mine" in result.err and reason in result.err
    assert "Traceback" not in result.err
    if factory.endswith("NoProba"):
        assert "has no predict_proba" in result.err


def test_check_config_accepts_and_prints_custom_models(run_cli, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text(_toml())
    result = run_cli("check-config", "--config", str(toml))
    assert result.code == 0, result.err
    assert '[models.sk_logistic]\nfactory = "sklearn.linear_model:LogisticRegression"' in (
        result.out
    )


# -- retrain, artifact, gate, serving -------------------------------------------------------


@pytest.fixture(scope="module")
def small_db(tmp_path_factory, sp500, vix) -> Path:
    """A store holding the bundled S&P 500 from 1990 as live samples (no archive)."""
    path = tmp_path_factory.mktemp("custom") / "regimed.db"
    config = Config().replace(store=StoreConfig(path=str(path)))
    bars = sp500[sp500.index >= "1990-01-01"]
    store_history(config, {"^GSPC": bars}, vix)
    return path


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    return copy_store(small_db, tmp_path)


def _config(db: Path, **kw: str) -> Config:
    return parse_config(_toml(db, **kw), env={})


def test_custom_models_go_through_retrain_gate_artifact_and_live_scoring(db):
    config = _config(db, models='"logistic_regression", "sk_logistic", "centroid"')
    report = retrain(config, trigger="manual").to_json()

    models = report["validation"]["models"]
    assert set(models) == {"logistic_regression", "sk_logistic", "centroid", "ensemble"}
    for name in ("sk_logistic", "centroid"):
        assert 0.0 <= models[name]["balanced_accuracy"] <= 1.0
        assert models[name]["per_regime"]  # validated per regime like any model
    assert set(report["ensemble"]["weights"]) == {"logistic_regression", "sk_logistic", "centroid"}
    assert report["gate"]["rule"] in {"no_champion", "naive_edge"}
    assert report["promoted"] is True, report["reason"]

    artifact = Path(report["artifact"]["path"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    entries = {e["model"]: e for e in manifest["files"]}
    assert entries["centroid"]["trusted"] == [CENTROID]
    assert "trusted" not in entries["sk_logistic"]  # scikit-learn's own types need no list

    with Store.open(config.store) as store:
        loaded = load_champion(config, store)
        assert loaded is not None and loaded.record.version == report["version"]
        assert isinstance(loaded.ensemble.models["centroid"], WeightedCentroid)

        scorer = LiveScorer(config, store)
        assert scorer.refresh(force=True) is True
        _, stored = store.read_samples(source=None, labelled=True)
        X = np.asarray(stored[-50:])
        days = [(dt.date(2030, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(50)]
        rows = [("^GSPC", day, "normal", None) for day in days]
        predictions = scorer.score_rows(rows, X)
    assert len(predictions) == 50
    assert {p.model_version for p in predictions} == {report["version"]}
    expected = loaded.ensemble.proba(X)
    assert [p.proba for p in predictions] == expected.tolist()


def test_a_refused_model_stops_the_retrain_before_any_fit(db):
    config = _config(
        db,
        models='"logistic_regression", "mine"',
        extra=(f'[models.mine]\nfactory = "{HERE}:NoWeights"\n'),
    )
    heard: list[str] = []
    with pytest.raises(ConfigError) as caught:
        retrain(config, progress=lambda event, details: heard.append(event))
    assert "models.mine: the estimator NoWeights from" in str(caught.value)
    assert "its fit takes no sample_weight" in str(caught.value)
    assert heard == []  # not even the first stage
    with Store.open(config.store) as store:
        assert Registry(store).models() == [] and Registry(store).last_retrain_run() is None


def test_the_cli_retrain_imports_the_factory_module_in_a_fresh_process(db, tmp_path):
    """`regimed retrain` in a child process with PYTHONPATH naming the module's root, as the
    daemon's environment must (docs/models.md)."""
    toml = tmp_path / "config.toml"
    toml.write_text(_toml(db, models='"centroid"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli.main", "retrain", "--json", "--config", str(toml)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["validation"]["models"]) == {"centroid", "ensemble"}
    config = _config(db, models='"centroid"')
    with Store.open(config.store) as store:
        loaded = load_champion(config, store)
    assert loaded is not None and isinstance(loaded.ensemble.models["centroid"], WeightedCentroid)


# -- the artifact's trusted types -----------------------------------------------------------


@pytest.fixture(scope="module")
def centroid() -> WeightedCentroid:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(np.int8)
    return WeightedCentroid(scale=2.0).fit(X, y, sample_weight=rng.uniform(0.5, 2, size=300))


def test_the_artifact_round_trip_keeps_the_probabilities_bit_for_bit(tmp_path, centroid):
    saved = save_bundle(tmp_path, "v1", {"centroid": centroid}, {}, {"centroid": [CENTROID]})
    loaded = load_bundle(saved.path, saved.sha256, {"centroid": (CENTROID,)})
    X = np.random.default_rng(4).normal(size=(20, 4))
    again = loaded.models["centroid"]
    assert isinstance(again, WeightedCentroid)
    assert np.array_equal(again.predict_proba(X), centroid.predict_proba(X))


def test_a_type_outside_trusted_is_not_written(tmp_path, centroid):
    with pytest.raises(ArtifactError) as caught:
        save_bundle(tmp_path, "v1", {"centroid": centroid}, {})
    assert f"holds types outside daemon.registry.artifacts.SKOPS_TRUSTED_TYPES: {CENTROID};" in (
        str(caught.value)
    )
    assert "models.centroid.trusted" in str(caught.value)
    assert not (tmp_path / "v1").exists()


def test_loading_refuses_a_type_the_configuration_does_not_trust(tmp_path, centroid):
    saved = save_bundle(tmp_path, "v1", {"centroid": centroid}, {}, {"centroid": [CENTROID]})
    for current in (None, {}, {"centroid": ("other.module.Type",)}):
        with pytest.raises(ArtifactError) as caught:
            load_bundle(saved.path, saved.sha256, current)
        assert f"{CENTROID} (not in models.centroid.trusted of the configuration)" in str(
            caught.value
        )
        assert "refused" in str(caught.value)


def test_loading_refuses_a_type_the_manifest_did_not_record(tmp_path, centroid):
    """A manifest rewritten without the model's trusted list (and its hash re-pinned, as whoever
    can write the store could) does not load a type on the configuration's word alone."""
    saved = save_bundle(tmp_path, "v1", {"centroid": centroid}, {}, {"centroid": [CENTROID]})
    path = saved.path / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["files"][0]["trusted"]
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    path.chmod(0o600)
    path.write_bytes(raw)
    import hashlib

    with pytest.raises(ArtifactError) as caught:
        load_bundle(saved.path, hashlib.sha256(raw).hexdigest(), {"centroid": (CENTROID,)})
    assert (
        f"{CENTROID} (not in the trusted list the manifest recorded when the bundle was saved)"
        in str(caught.value)
    )


def test_the_champion_is_refused_when_the_configuration_drops_its_trusted_type(db):
    config = _config(db, models='"centroid"')
    retrain(config)
    narrowed = dataclasses.replace(
        config.models,
        custom=tuple(dataclasses.replace(m, trusted=()) for m in config.models.custom),
    )
    with Store.open(config.store) as store, pytest.raises(ArtifactError) as caught:
        load_champion(config.replace(models=narrowed), store)
    assert f"{CENTROID} (not in models.centroid.trusted of the configuration)" in str(caught.value)
