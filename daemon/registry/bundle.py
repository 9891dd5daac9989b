"""What a model bundle is on disk, shared by writing (daemon.registry.artifacts) and reading
(daemon.registry.loading): the manifest's name and format, the file formats, the types a skops
file may hold, the loaded bundle and LightGBM's classifier wrapper, and the hashes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.errors import ArtifactError

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMAT_PARTS",
    "SKOPS_TRUSTED_TYPES",
    "VALIDATED",
    "LightGBMBooster",
    "LoadedBundle",
    "SavedArtifact",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "regimed-bundle/1"
#: The format of a bundle that also keeps its validated members (`VALIDATED`): a regimed that
#: knows only /1 refuses it instead of mixing the two sets of members.
MANIFEST_FORMAT_PARTS = "regimed-bundle/2"
#: The part of a manifest entry that holds a validated member: the members as they were fitted
#: before the refit, which the gate compares a later candidate with. An entry without a part is
#: a served member; the validated member's file is `validated.<name><suffix>`.
VALIDATED = "validated"

#: Every type a skops file of ours may contain, written out by hand: the eight base models as
#: the trainer builds them (scikit-learn's histogram gradient boosting, random forest, extra
#: trees, MLP, logistic regression, the Nystroem and exact RBF SVMs with Platt scaling; each
#: scale-sensitive one behind a StandardScaler in a Pipeline) and the objects they hold. skops
#: trusts many more types by default; a type missing here is refused on saving and on loading.
#: `sklearn.tree._tree.Tree` and the histogram boosting `TreePredictor` are types skops does not
#: trust by default because a crafted node array can crash the process; they are trusted here
#: because a file is parsed only after its sha256 matched the one recorded in the registry.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    # containers and scalars of the skops schema
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "numpy.ndarray",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.uint64",
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
    # pipeline and preprocessing
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.kernel_approximation.Nystroem",
    # forests
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._tree.Tree",
    # histogram gradient boosting
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    # MLP
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    # linear models and SVMs
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.SVC",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    # regimed's own estimators (daemon.training.models): the exact RBF SVM fitted on a
    # subsample (svm.method = "subsample"), the linear SVM of the Nystroem map and the binning
    # before the histogram boosting
    "daemon.training.models.SubsampledClassifier",
    "daemon.training.models.LinearSVM",
    "daemon.training.models.QuantileBinner",
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FORMATS = {"xgboost-ubj": ".ubj", "lightgbm-text": ".txt", "skops": ".skops"}
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class SavedArtifact:
    """A bundle on disk: its directory and the sha256 the registry records for it."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class LoadedBundle:
    """The models of a bundle by name (each with `predict_proba(X) -> (n, 2)`) and its meta;
    `validated`, the members as validated before a refit (empty when the bundle keeps none:
    it was not refit, or was written before refits existed)."""

    models: dict[str, Any]
    meta: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    validated: dict[str, Any] = field(default_factory=dict)


def file_stem(name: str, part: str | None) -> str:
    """The file name, without its suffix, of model `name` in `part` (None: a served member)."""
    return name if part is None else f"{part}.{name}"


class LightGBMBooster:
    """A LightGBM booster with the `predict_proba` of the binary LGBMClassifier it came from.

    LightGBM's model text holds the booster only; this is the part of the classifier the
    daemon needs, and its probabilities equal the classifier's bit for bit.
    """

    def __init__(self, booster: Any, classes: npt.ArrayLike = (0, 1)) -> None:
        self.booster = booster
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Probabilities of (classes_[0], classes_[1]) per row, shape (n, 2)."""
        positive = np.asarray(self.booster.predict(X), dtype=np.float64)
        return np.vstack((1.0 - positive, positive)).transpose()

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """The more likely class of each row."""
        result: npt.NDArray[Any] = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return result

    def __repr__(self) -> str:
        return f"LightGBMBooster(trees={self.booster.num_trees()})"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _skops_types(data: bytes) -> set[str]:
    """Every 'module.Class' named by a node of a skops file's schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactError(f"not a skops file: {exc}") from None
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                found.add(f"{module}.{cls}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
