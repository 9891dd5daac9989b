"""Model bundles: every kind of model round-trips exactly; tampering of any kind is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import warnings

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from xgboost import XGBClassifier

from daemon.errors import ArtifactError, RegimedError
from daemon.registry.artifacts import (
    MANIFEST,
    SKOPS_TRUSTED_TYPES,
    LightGBMBooster,
    artifacts_root,
    check_version,
    load_bundle,
    save_bundle,
    sweep_temporary,
    verify_bundle,
)
from tests.size_limit import MODELS, run_python

FILES = {
    "xgboost": "xgboost.ubj",
    "lightgbm": "lightgbm.txt",
    "random_forest": "random_forest.skops",
    "extra_trees": "extra_trees.skops",
    "gradient_boosting": "gradient_boosting.skops",
    "mlp": "mlp.skops",
    "logistic_regression": "logistic_regression.skops",
    "svm": "svm.skops",
}


def make_data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=n) > 0).astype(np.int8)
    return X, y


def fit_all(X: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """One small fitted model of each kind the trainer uses."""
    models: dict[str, object] = {
        "xgboost": XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, random_state=0),
        "lightgbm": LGBMClassifier(n_estimators=8, num_leaves=7, n_jobs=1, verbose=-1),
        "random_forest": RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
        "extra_trees": ExtraTreesClassifier(n_estimators=5, max_depth=4, random_state=0),
        "gradient_boosting": HistGradientBoostingClassifier(max_iter=5, random_state=0),
        "mlp": Pipeline(
            [
                ("scale", StandardScaler()),
                ("mlp", MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0)),
            ]
        ),
        "logistic_regression": Pipeline(
            [("scale", StandardScaler()), ("logistic", LogisticRegression())]
        ),
        "svm": Pipeline(
            [
                ("scale", StandardScaler()),
                ("kernel", Nystroem(n_components=20, random_state=0)),
                ("svm", CalibratedClassifierCV(LinearSVC(dual=False), cv=3)),
            ]
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the MLP stops at max_iter
        for model in models.values():
            model.fit(X, y)  # type: ignore[attr-defined]
    return models


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def models(data):
    return fit_all(*data)


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    """One bundle of all eight kinds, saved once; tests that tamper use `bundle` (a copy)."""
    root = tmp_path_factory.mktemp("artifacts")
    return save_bundle(root, "20240106T210000Z", models, {"feature_version": 1, "vote": [0.5]})


@pytest.fixture
def bundle(saved, tmp_path):
    """A private copy of the saved bundle (modes kept) and its sha256."""
    copy = tmp_path / saved.path.name
    shutil.copytree(saved.path, copy)
    return copy, saved.sha256


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- round trip ----------------------------------------------------------------------------


def test_every_kind_of_model_round_trips_with_identical_probabilities(saved, models, data):
    X, _ = data
    loaded = load_bundle(saved.path, saved.sha256)
    assert set(loaded.models) == set(models)
    for name, model in models.items():
        expected = model.predict_proba(X)
        got = loaded.models[name].predict_proba(X)
        assert got.shape == (len(X), 2), name
        assert np.array_equal(got, expected), name
    assert isinstance(loaded.models["lightgbm"], LightGBMBooster)
    assert np.array_equal(loaded.models["lightgbm"].predict(X), models["lightgbm"].predict(X))
    assert type(loaded.models["xgboost"]) is XGBClassifier
    assert loaded.meta == {"feature_version": 1, "vote": [0.5]}


def test_the_bundle_hash_is_the_manifest_hash_and_the_manifest_pins_every_file(saved):
    assert saved.sha256 == sha256(saved.path / MANIFEST)
    manifest = json.loads((saved.path / MANIFEST).read_text())
    assert manifest["format"] == "regimed-bundle/1"
    assert manifest["version"] == "20240106T210000Z"
    assert {"numpy", "scikit-learn", "skops", "lightgbm"} <= set(manifest["libraries"])
    entries = {e["model"]: e for e in manifest["files"]}
    assert {name: e["file"] for name, e in entries.items()} == FILES
    assert entries["xgboost"]["format"] == "xgboost-ubj"
    assert entries["lightgbm"]["format"] == "lightgbm-text"
    assert entries["lightgbm"]["classes"] == [0, 1]
    assert entries["svm"]["format"] == "skops"
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256(saved.path / entry["file"])


def test_files_are_0600_the_directory_0700_and_no_temporary_is_left(saved):
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o700
    names = sorted(p.name for p in saved.path.iterdir())
    assert names == sorted([MANIFEST, *FILES.values()])
    for path in saved.path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert [p.name for p in saved.path.parent.iterdir()] == [saved.path.name]
    assert verify_bundle(saved.path, saved.sha256) == []


def test_the_sweep_removes_dead_saves_and_spares_one_whose_writer_runs(tmp_path):
    """Two stores in one folder share `models/`: one store's retrain must not remove the
    temporary directory another store's retrain is writing right now."""
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_dir = tmp_path / f".tmp-v9-{writer.pid}-abcd1234"
        dead_dir = tmp_path / f".tmp-v8-{dead.pid}-efgh5678"
        old_dir = tmp_path / ".tmp-v7-ijkl9012"  # no pid in the name
        for d in (live_dir, dead_dir, old_dir):
            (d / "partial").mkdir(parents=True)
        assert sweep_temporary(tmp_path) == sorted([dead_dir, old_dir])
        assert live_dir.is_dir()
        assert not dead_dir.exists() and not old_dir.exists()
    finally:
        writer.kill()
        writer.wait()
    assert sweep_temporary(tmp_path) == [live_dir]  # its writer is gone now


def test_a_loaded_bundle_can_be_saved_again_unchanged(saved, data, tmp_path):
    X, _ = data
    first = load_bundle(saved.path, saved.sha256)
    again = save_bundle(tmp_path, "copy", first.models, first.meta)
    second = load_bundle(again.path, again.sha256)
    for name, model in first.models.items():
        assert np.array_equal(second.models[name].predict_proba(X), model.predict_proba(X))


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [MANIFEST, *FILES.values()])
def test_flipping_one_byte_of_any_file_is_refused_naming_it(bundle, name):
    path, digest = bundle
    target = path / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    expected = "differs from the registry's" if name == MANIFEST else "differs from the manifest's"
    with pytest.raises(ArtifactError, match=rf"{name}: sha256 [0-9a-f]{{64}} {expected}"):
        load_bundle(path, digest)
    problems = verify_bundle(path, digest)
    assert len(problems) == 1
    assert problems[0].startswith(str(target))


@pytest.mark.parametrize(("name", "bit"), [("svm.skops", stat.S_IWOTH), (".", stat.S_IWGRP)])
def test_a_file_or_directory_writable_by_others_or_group_is_refused(bundle, name, bit):
    path, digest = bundle
    target = path / name
    target.chmod(stat.S_IMODE(target.stat().st_mode) | bit)
    who = "others" if bit == stat.S_IWOTH else "group"
    with pytest.raises(
        ArtifactError, match=rf"{target.name}: mode 0[67][0-7]{{2}} is writable by {who}"
    ):
        load_bundle(path, digest)


def test_a_replaced_manifest_is_refused_even_when_it_matches_the_files(bundle, models):
    """Swap a model file and write a manifest that agrees with it: only the registry's hash
    of the manifest catches that."""
    path, digest = bundle
    target = path / "logistic_regression.skops"
    target.chmod(0o600)
    import skops.io

    target.write_bytes(skops.io.dumps(models["mlp"]))
    manifest = json.loads((path / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["file"] == target.name:
            entry["sha256"] = sha256(target)
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"manifest.json: sha256 .* differs from the registry"):
        load_bundle(path, digest)


def test_symlinks_are_refused(bundle, tmp_path):
    path, digest = bundle
    target = path / "xgboost.ubj"
    elsewhere = tmp_path / "elsewhere.ubj"
    shutil.copy2(target, elsewhere)
    target.unlink()
    target.symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match=r"xgboost.ubj: is a symlink; refused"):
        load_bundle(path, digest)
    link = tmp_path / "link"
    link.symlink_to(path, target_is_directory=True)
    assert verify_bundle(link, digest) == [f"{link}: is a symlink; refused"]


def test_a_missing_file_an_unexpected_file_and_a_missing_directory_are_refused(bundle):
    path, digest = bundle
    (path / "mlp.skops").unlink()
    (path / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    problems = verify_bundle(path, digest)
    assert problems == [
        f"{path / 'mlp.skops'}: missing",
        f"{path / 'extra.pkl'}: unexpected file, not in the manifest",
    ]
    with pytest.raises(ArtifactError, match=r"mlp.skops: missing; .*extra.pkl: unexpected"):
        load_bundle(path, digest)
    shutil.rmtree(path)
    with pytest.raises(ArtifactError, match=r"missing \(the bundle directory does not exist\)"):
        load_bundle(path, digest)


def test_a_skops_file_with_an_untrusted_type_is_refused_naming_the_type(tmp_path, data):
    """A bundle whose hashes are all consistent (as if the registry row were written by an
    attacker too) still cannot make skops build a type outside the allowlist."""
    import skops.io

    X, y = data
    model = Pipeline([("log", FunctionTransformer(np.abs)), ("lr", LogisticRegression())]).fit(X, y)
    path = tmp_path / "v1"
    path.mkdir(mode=0o700)
    payload = skops.io.dumps(model)
    (path / "bad.skops").write_bytes(payload)
    (path / "bad.skops").chmod(0o600)
    manifest = {
        "format": "regimed-bundle/1",
        "meta": {},
        "files": [{"model": "bad", "file": "bad.skops", "format": "skops",
                   "sha256": hashlib.sha256(payload).hexdigest()}],
    }  # fmt: skip
    raw = json.dumps(manifest).encode()
    (path / MANIFEST).write_bytes(raw)
    (path / MANIFEST).chmod(0o600)
    digest = hashlib.sha256(raw).hexdigest()
    assert verify_bundle(path, digest) == []
    with pytest.raises(
        ArtifactError,
        match=r"bad.skops: holds types outside daemon.registry.artifacts.SKOPS_TRUSTED_TYPES: "
        r".*sklearn.preprocessing._function_transformer.FunctionTransformer",
    ):
        load_bundle(path, digest)


def test_the_trusted_types_are_a_short_explicit_list():
    assert len(SKOPS_TRUSTED_TYPES) == len(set(SKOPS_TRUSTED_TYPES)) < 50
    assert all("." in t and "*" not in t for t in SKOPS_TRUSTED_TYPES)


# -- saving failures -----------------------------------------------------------------------


@pytest.mark.integration  # a child process
def test_a_save_the_disk_refuses_midway_names_the_file_and_leaves_no_version_directory(tmp_path):
    # The logistic model fits under the cap, the XGBoost model does not (size_limit.MODELS):
    # the save fails in the middle, in write(2), as on a full disk.
    done = run_python(
        MODELS
        + f"""
from daemon.registry.artifacts import save_bundle
from daemon.errors import ArtifactError
limit_writes(256 * 1024)
try:
    save_bundle({str(tmp_path)!r}, "v1", models, {{}})
except ArtifactError as exc:
    print(exc)
"""
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("model version 'v1': cannot write ")
    assert message.endswith("/xgboost.ubj: File too large")
    assert str(tmp_path / ".tmp-v1-") in message
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_an_untrusted_type_is_not_saved(models, data, tmp_path):
    X, y = data
    odd = Pipeline([("f", FunctionTransformer(np.abs)), ("lr", LogisticRegression())]).fit(X, y)
    with pytest.raises(
        ArtifactError,
        match=r"model 'odd': Pipeline holds types outside "
        r"daemon.registry.artifacts.SKOPS_TRUSTED_TYPES: "
        r"numpy.absolute, sklearn.preprocessing._function_transformer.FunctionTransformer; a "
        r"bundle must be loadable, so it is not written",
    ):
        save_bundle(tmp_path, "v1", {"random_forest": models["random_forest"], "odd": odd}, {})
    assert list(tmp_path.iterdir()) == []


def test_meta_must_be_json_and_a_version_is_written_once(models, tmp_path):
    lr = {"logistic_regression": models["logistic_regression"]}
    with pytest.raises(ArtifactError, match="meta is not JSON"):
        save_bundle(tmp_path, "v1", lr, {"x": object()})
    save_bundle(tmp_path, "v1", lr, {})
    with pytest.raises(ArtifactError, match=r"v1: already exists; a model version is written once"):
        save_bundle(tmp_path, "v1", lr, {})
    with pytest.raises(ArtifactError, match="no models to save"):
        save_bundle(tmp_path, "v2", {}, {})


@pytest.mark.parametrize(
    "version", ["", "..", "../x", "a/b", "a\\b", ".hidden", "a..b", "x" * 129, "v 1", None]
)
def test_unsafe_version_strings_are_refused(version, tmp_path, models):
    with pytest.raises(ArtifactError, match="no path separators"):
        check_version(version)
    with pytest.raises(RegimedError):
        save_bundle(tmp_path, version, {"lr": models["logistic_regression"]}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", ["20240106T210000Z", "v1.2.3", "2024-01-06_2", "v1+local"])
def test_ordinary_version_strings_are_accepted(version):
    assert check_version(version) == version


def test_artifacts_live_in_models_beside_the_store(tmp_path):
    assert artifacts_root(tmp_path / "regimed.db") == tmp_path.resolve() / "models"


def test_regimeds_own_estimators_keep_the_class_paths_that_stored_bundles_record():
    """A skops file names each object's class by module path; moving one of these classes
    would make every registered bundle that holds it unloadable."""
    from daemon.registry.bundle import SKOPS_TRUSTED_TYPES
    from daemon.training.models import LinearSVM, QuantileBinner, SubsampledClassifier

    for cls in (SubsampledClassifier, LinearSVM, QuantileBinner):
        path = f"{cls.__module__}.{cls.__qualname__}"
        assert path == f"daemon.training.models.{cls.__name__}"
        assert path in SKOPS_TRUSTED_TYPES


# -- the validated part of a refit model --------------------------------------------------------


def test_a_bundle_keeps_the_validated_members_beside_the_served_ones(tmp_path):
    X, y = make_data()
    served = {"logistic_regression": LogisticRegression(C=1.0).fit(X, y)}
    validated = {"logistic_regression": LogisticRegression(C=0.01).fit(X[:150], y[:150])}
    saved = save_bundle(tmp_path, "v1", served, {"k": 1}, validated=validated)
    assert sorted(p.name for p in saved.path.iterdir()) == sorted(
        [MANIFEST, "logistic_regression.skops", "validated.logistic_regression.skops"]
    )
    manifest = json.loads((saved.path / MANIFEST).read_text())
    assert manifest["format"] == "regimed-bundle/2"
    loaded = load_bundle(saved.path, saved.sha256)
    for part, models in ((loaded.models, served), (loaded.validated, validated)):
        np.testing.assert_array_equal(
            part["logistic_regression"].predict_proba(X),
            models["logistic_regression"].predict_proba(X),
        )
    # without a validated part the bundle is written as before refits, and loads with none
    plain = save_bundle(tmp_path, "v2", served, {})
    assert json.loads((plain.path / MANIFEST).read_text())["format"] == "regimed-bundle/1"
    assert load_bundle(plain.path, plain.sha256).validated == {}


def test_a_changed_validated_member_is_refused(tmp_path):
    X, y = make_data()
    model = {"logistic_regression": LogisticRegression().fit(X, y)}
    saved = save_bundle(tmp_path, "v1", model, {}, validated=model)
    target = saved.path / "validated.logistic_regression.skops"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    problems = verify_bundle(saved.path, saved.sha256)
    assert len(problems) == 1 and "validated.logistic_regression.skops: sha256" in problems[0]
    with pytest.raises(ArtifactError, match=r"validated\.logistic_regression\.skops"):
        load_bundle(saved.path, saved.sha256)


def _manifest_with(path, fmt: str, entries: list[dict]) -> str:
    """Write a manifest of format `fmt` listing `entries`; its sha256."""
    raw = json.dumps({"format": fmt, "meta": {}, "files": entries}).encode()
    (path / MANIFEST).write_bytes(raw)
    (path / MANIFEST).chmod(0o600)
    return hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("fmt", "part", "expected"),
    [
        ("regimed-bundle/1", "validated", "expected no part or 'validated' (format /2)"),
        ("regimed-bundle/2", "refit", "expected no part or 'validated' (format /2)"),
        ("regimed-bundle/2", "validated", "lists no served model file"),
    ],
)
def test_a_manifest_with_a_bad_part_is_refused(tmp_path, fmt, part, expected):
    X, y = make_data()
    saved = save_bundle(
        tmp_path, "v1", {"logistic_regression": LogisticRegression().fit(X, y)}, {}
    )
    manifest = json.loads((saved.path / MANIFEST).read_text())
    (entry,) = manifest["files"]
    shutil.move(saved.path / entry["file"], saved.path / f"{part}.{entry['file']}")
    entry.update(part=part, file=f"{part}.{entry['file']}")
    digest = _manifest_with(saved.path, fmt, [entry])
    (problem,) = verify_bundle(saved.path, digest)
    assert expected in problem
