"""Every built-in model keeps the contract the trainer, the scorer and the registry rely on.

Built by name, fitted with loss weights, it answers `predict_proba` with one probability per
class (0 and 1) for every row, each in [0, 1] and summing to 1; saved as an artifact and loaded
back, it gives the same probabilities bit for bit. A new model name in `MODEL_NAMES` is checked
here without a new test.

Data: 240 rows of 8 features whose label depends on the first two plus noise, in time order,
with uneven weights; the small hyper-parameters of `SMALL_MODELS` keep every fit under a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from daemon.config.training import MODEL_NAMES, SVMConfig
from daemon.registry.artifacts import load_bundle, save_bundle
from daemon.registry.ensemble import positive_proba
from daemon.training.fitting import fit_model
from tests.factories import SMALL_MODELS

#: Every model, the SVM in both of its forms (a kernel approximation, or the exact SVM on a
#: sample of the rows).
VARIANTS = [(name, SMALL_MODELS) for name in MODEL_NAMES] + [
    ("svm", dataclasses.replace(SMALL_MODELS, svm=SVMConfig(method="subsample", max_samples=100)))
]
IDS = [*MODEL_NAMES, "svm-subsample"]

Data = tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(240, 8)).astype(np.float32)
    y = (X[:, 0] - 0.7 * X[:, 1] + rng.normal(scale=0.8, size=240) > 0).astype(np.int8)
    weights = rng.choice([0.8, 1.0, 1.3, 2.0], size=240)
    return X, y, weights


def test_there_are_eight_built_in_models():
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES)) == 8


@pytest.mark.parametrize(("name", "config"), VARIANTS, ids=IDS)
def test_every_model_fits_predicts_probabilities_and_round_trips_as_an_artifact(
    name, config, data, tmp_path: Path
):
    X, y, weights = data
    model = fit_model(name, X, y, weights, config, n_jobs=1, seed=3)
    assert [int(c) for c in model.classes_] == [0, 1]
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    assert proba.shape == (len(X), 2)
    assert ((proba >= 0.0) & (proba <= 1.0)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    positive = positive_proba(model, X)
    assert positive.shape == (len(X),) and positive.dtype == np.float64
    np.testing.assert_array_equal(positive, proba[:, 1])
    assert len(np.unique(positive)) > 1  # it learned something from the rows

    saved = save_bundle(tmp_path, "v1", {name: model}, {"name": name})
    loaded = load_bundle(saved.path, saved.sha256)
    assert set(loaded.models) == {name} and loaded.meta == {"name": name}
    again = loaded.models[name]
    np.testing.assert_array_equal(np.asarray(again.predict_proba(X), dtype=np.float64), proba)
    np.testing.assert_array_equal(positive_proba(again, X), positive)
