"""Model artifacts on disk: one directory per model version, written atomically, pinned by hash.

A bundle is `<root>/<version>/` holding one file per base model and `manifest.json`:

- XGBoost models in XGBoost's own UBJSON format (`<name>.ubj`), LightGBM models as LightGBM's
  model text (`<name>.txt`), every other (scikit-learn) model with skops (`<name>.skops`):
  none of these formats runs code when read, unlike pickle or joblib.
- `manifest.json` holds the caller's `meta`, the library versions, and for every file its model
  name, format and sha256. The bundle's sha256 is the sha256 of the manifest's bytes, so the one
  hash the registry records pins every byte of every file.

Writing goes to a private temporary directory inside `root` (0700, files 0600, each file and the
directory fsynced) that is then renamed into place, so a crash leaves either no version
directory or a complete one. Reading checks, before any model byte is parsed: the manifest's hash
against the registry's, every file's hash against the manifest, no symlinks, no file or
directory writable by group or others, no missing or unexpected file; skops files may hold only
the types in `SKOPS_TRUSTED_TYPES`. Every file is read once through a descriptor and parsed from
those verified bytes, so nothing can be swapped between the check and the load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.errors import ArtifactError

__all__ = [
    "MANIFEST",
    "SKOPS_TRUSTED_TYPES",
    "ArtifactError",
    "LightGBMBooster",
    "LoadedBundle",
    "SavedArtifact",
    "artifacts_root",
    "check_version",
    "load_bundle",
    "save_bundle",
    "store_dir",
    "sweep_temporary",
    "unregistered",
    "verify_bundle",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "regimed-bundle/1"

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


def check_version(version: object, what: str = "model version") -> str:
    """`version` if it is safe as one directory name, else ArtifactError naming it.

    Letters, digits, '.', '_', '-' and '+', starting with a letter or digit, at most 128
    characters: no path separator, no '..', nothing a shell or a URL would mangle.
    """
    if not isinstance(version, str) or not _NAME.fullmatch(version) or ".." in version:
        raise ArtifactError(
            f"{what} {version!r}: expected 1-128 letters, digits, '.', '_', '-' or '+', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return version


def store_dir(store_path: str | os.PathLike[str]) -> Path:
    """The directory of the store at `store_path` (symlinks resolved): the registry's artifact
    paths are relative to it."""
    return Path(store_path).resolve().parent


def artifacts_root(store_path: str | os.PathLike[str]) -> Path:
    """The folder of model bundles for the store at `store_path`: `models/` beside the file."""
    return store_dir(store_path) / "models"


def sweep_temporary(root: Path) -> list[Path]:
    """Remove the temporary directories of bundles whose save never finished (a retrain killed
    mid-save); the removed paths. Call it while holding the store's retrain lock, so no save of
    this store is in progress. A temporary directory names the pid that writes it: one whose
    writer still runs (another store's retrain in the same folder) is left alone."""
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.glob(f"{_TEMP_PREFIX}*")):
        if not path.is_dir() or path.is_symlink() or _writer_alive(path.name):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _writer_alive(name: str) -> bool:
    """Whether the process named in a temporary directory's name (`.tmp-VERSION-PID-XXXX`)
    runs and is not this one (this one holds the lock and is not saving)."""
    parts = name[len(_TEMP_PREFIX) :].rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def unregistered(root: Path, versions: Iterable[str]) -> list[Path]:
    """Version directories under `root` that are not among `versions` (the registered ones):
    a retrain killed between writing its bundle and registering it, or the bundles of another
    store kept in the same folder."""
    if not root.is_dir():
        return []
    known = set(versions)
    return [
        path
        for path in sorted(root.iterdir())
        if path.is_dir() and not path.name.startswith(".") and path.name not in known
    ]


@dataclass(frozen=True)
class SavedArtifact:
    """A bundle on disk: its directory and the sha256 the registry records for it."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class LoadedBundle:
    """The models of a bundle by name (each with `predict_proba(X) -> (n, 2)`) and its meta."""

    models: dict[str, Any]
    meta: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)


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


# -- saving --------------------------------------------------------------------------------


def save_bundle(
    root: Path, version: str, models: Mapping[str, Any], meta: Mapping[str, Any]
) -> SavedArtifact:
    """Write `models` and `meta` as `<root>/<version>/` atomically and return its sha256.

    Any failure (a model that cannot be written, a skops type outside `SKOPS_TRUSTED_TYPES`,
    meta that is not JSON, a full disk) removes the temporary directory and re-raises: no
    partial version directory is ever visible. An existing version directory is never replaced.
    A write the system refuses (a full disk, a file size limit, permissions) raises
    ArtifactError naming the file.
    """
    try:
        return _save_bundle(Path(root), version, models, meta)
    except OSError as exc:
        raise ArtifactError(
            f"model version {version!r}: cannot write {exc.filename or root}: "
            f"{exc.strerror or exc}"
        ) from None


def _save_bundle(
    root: Path, version: str, models: Mapping[str, Any], meta: Mapping[str, Any]
) -> SavedArtifact:
    check_version(version)
    if not models:
        raise ArtifactError(f"model version {version!r}: no models to save")
    for name in models:
        check_version(name, "model name")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = root / version
    if os.path.lexists(final):
        raise ArtifactError(f"{final}: already exists; a model version is written once")
    try:
        meta_json = json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"model version {version!r}: meta is not JSON: {exc}") from None

    temp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{version}-{os.getpid()}-", dir=root))
    try:
        entries = [_save_model(temp, name, model) for name, model in models.items()]
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "libraries": _library_versions(),
            "meta": meta_json,
            "files": entries,
        }
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _write_file(temp / MANIFEST, data)
        _fsync_dir(temp)
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return SavedArtifact(final, _sha256(data))


def _save_model(directory: Path, name: str, model: Any) -> dict[str, Any]:
    """Write one model into `directory` in its format; its manifest entry."""
    import lightgbm
    import xgboost

    entry: dict[str, Any] = {"model": name}
    if isinstance(model, xgboost.XGBModel):
        if not isinstance(model, xgboost.XGBClassifier):
            raise ArtifactError(f"model {name!r}: {type(model).__name__}: expected a classifier")
        data = _xgboost_bytes(model)
        file = directory / f"{name}.ubj"
        _write_file(file, data)
        entry.update(file=file.name, format="xgboost-ubj", sha256=_sha256(data))
        return entry
    if isinstance(model, lightgbm.LGBMModel | lightgbm.Booster | LightGBMBooster):
        booster, classes = _lightgbm_parts(name, model)
        data = booster.model_to_string().encode("utf-8")
        file = directory / f"{name}.txt"
        _write_file(file, data)
        entry.update(file=file.name, format="lightgbm-text", classes=classes, sha256=_sha256(data))
        return entry
    import skops.io  # type: ignore[import-untyped]

    data = skops.io.dumps(model)
    untrusted = sorted(_skops_types(data) - set(SKOPS_TRUSTED_TYPES))
    if untrusted:
        raise ArtifactError(
            f"model {name!r}: {type(model).__name__} holds types outside "
            f"daemon.registry.artifacts.SKOPS_TRUSTED_TYPES: {', '.join(untrusted)}; a bundle "
            "must be loadable, so it is not written (add the types there if they are safe)"
        )
    file = directory / f"{name}.skops"
    _write_file(file, data)
    entry.update(file=file.name, format="skops", sha256=_sha256(data))
    return entry


def _xgboost_bytes(model: Any) -> bytes:
    """The bytes `XGBClassifier.save_model` writes to a `.ubj` file (the booster in UBJSON with
    the scikit-learn wrapper's marker), made in memory so that regimed's own write reports a
    failure with its cause (XGBoost's file writer says only "FileStream.Write incomplete")."""
    booster = model.get_booster()
    booster.set_attr(scikit_learn=json.dumps({"_estimator_type": "classifier"}))
    try:
        return bytes(booster.save_raw(raw_format="ubj"))
    finally:
        booster.set_attr(scikit_learn=None)


def _lightgbm_parts(name: str, model: Any) -> tuple[Any, list[Any]]:
    """The booster and the two class labels of a LightGBM classifier (or of a loaded one)."""
    import lightgbm

    if isinstance(model, LightGBMBooster):
        return model.booster, model.classes_.tolist()
    if isinstance(model, lightgbm.Booster):
        booster, classes = model, [0, 1]
    elif isinstance(model, lightgbm.LGBMClassifier):
        booster, classes = model.booster_, np.asarray(model.classes_).tolist()
    else:
        raise ArtifactError(f"model {name!r}: {type(model).__name__}: expected a classifier")
    if len(classes) != 2 or booster.num_model_per_iteration() != 1:
        raise ArtifactError(f"model {name!r}: expected a binary classifier, got {classes!r}")
    return booster, classes


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("numpy", "scikit-learn", "skops", "xgboost", "xgboost-cpu", "lightgbm"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync a new file; an OSError names `path` (os.write and fsync do not)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# -- checking and loading ------------------------------------------------------------------


def verify_bundle(path: str | os.PathLike[str], sha256: str) -> list[str]:
    """Every problem of the bundle at `path` against the registry's `sha256`; empty if sound.

    Checks what `load_bundle` checks except the skops types, without parsing any model.
    """
    with _Bundle(Path(path), sha256) as bundle:
        return bundle.problems


def load_bundle(path: str | os.PathLike[str], sha256: str) -> LoadedBundle:
    """The models of the bundle at `path`, after every check; ArtifactError on any problem.

    `sha256` is the hash the registry recorded; the message names the file and what is wrong.
    """
    with _Bundle(Path(path), sha256) as bundle:
        if bundle.problems:
            raise ArtifactError("; ".join(bundle.problems))
        models = {
            entry["model"]: _load_model(
                bundle.path / entry["file"], entry, bundle.data[entry["file"]]
            )
            for entry in bundle.manifest["files"]
        }
        return LoadedBundle(models, dict(bundle.manifest.get("meta", {})), bundle.manifest)


def _load_model(path: Path, entry: Mapping[str, Any], data: bytes) -> Any:
    kind = entry["format"]
    try:
        if kind == "xgboost-ubj":
            import xgboost

            model = xgboost.XGBClassifier()
            model.load_model(bytearray(data))
            return model
        if kind == "lightgbm-text":
            import lightgbm

            booster = lightgbm.Booster(model_str=data.decode("utf-8"))
            return LightGBMBooster(booster, entry.get("classes", [0, 1]))
        import skops.io

        untrusted = sorted(_skops_types(data) - set(SKOPS_TRUSTED_TYPES))
        if untrusted:
            raise ArtifactError(
                f"{path}: holds types outside daemon.registry.artifacts.SKOPS_TRUSTED_TYPES: "
                f"{', '.join(untrusted)}; refused"
            )
        return skops.io.loads(data, trusted=list(SKOPS_TRUSTED_TYPES))
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot be read as {kind}: {exc}") from exc


class _Bundle:
    """The checked contents of one bundle directory, read through one directory descriptor."""

    def __init__(self, path: Path, sha256: str) -> None:
        self.path = path
        self.expected = sha256
        self.problems: list[str] = []
        self.manifest: dict[str, Any] = {}
        self.data: dict[str, bytes] = {}
        self._dir_fd: int | None = None

    def __enter__(self) -> _Bundle:
        self._check()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _problem(self, where: Path, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def _check(self) -> None:
        path = self.path
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self._problem(path, "missing (the bundle directory does not exist)")
            return
        if stat.S_ISLNK(info.st_mode):
            self._problem(path, "is a symlink; refused")
            return
        if not stat.S_ISDIR(info.st_mode):
            self._problem(path, "is not a directory")
            return
        self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._check_mode(path, os.fstat(self._dir_fd).st_mode)
        raw = self._read(MANIFEST)
        if raw is None:
            return
        actual = _sha256(raw)
        if actual != self.expected:
            self._problem(
                path / MANIFEST,
                f"sha256 {actual} differs from the registry's {self.expected} (the manifest was "
                "replaced or edited)",
            )
            return
        manifest = _parse_manifest(raw)
        if isinstance(manifest, str):
            self._problem(path / MANIFEST, manifest)
            return
        self.manifest = manifest
        listed = {MANIFEST}
        for entry in manifest["files"]:
            listed.add(entry["file"])
            data = self._read(entry["file"])
            if data is None:
                continue
            actual = _sha256(data)
            if actual != entry["sha256"]:
                self._problem(
                    path / entry["file"],
                    f"sha256 {actual} differs from the manifest's {entry['sha256']} (the file "
                    "was changed)",
                )
            else:
                self.data[entry["file"]] = data
        for name in sorted(set(os.listdir(self._dir_fd)) - listed):
            self._problem(path / name, "unexpected file, not in the manifest")

    def _check_mode(self, where: Path, mode: int) -> None:
        if mode & stat.S_IWOTH:
            self._problem(where, f"mode {stat.S_IMODE(mode):04o} is writable by others; refused")
        elif mode & stat.S_IWGRP:
            self._problem(where, f"mode {stat.S_IMODE(mode):04o} is writable by group; refused")

    def _read(self, name: str) -> bytes | None:
        """The bytes of one regular file of the bundle, or None after recording why not."""
        where = self.path / name
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._dir_fd)
        except FileNotFoundError:
            self._problem(where, "missing")
            return None
        except OSError as exc:
            if os.path.islink(where):
                self._problem(where, "is a symlink; refused")
            else:
                self._problem(where, f"cannot be opened: {exc.strerror}")
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                self._problem(where, "is not a regular file")
                return None
            self._check_mode(where, info.st_mode)
            return handle.read()


def _parse_manifest(raw: bytes) -> dict[str, Any] | str:
    """The manifest as a dict, or what is wrong with it."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"not a {MANIFEST_FORMAT} manifest"
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return "lists no model files"
    seen: set[str] = set()
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"files[{i}] is not an object"
        name, file, kind, digest = (entry.get(k) for k in ("model", "file", "format", "sha256"))
        if (
            not isinstance(name, str)
            or not _NAME.fullmatch(name)
            or kind not in _FORMATS
            or file != f"{name}{_FORMATS[kind]}"
            or not isinstance(digest, str)
            or not _HEX64.fullmatch(digest)
        ):
            return f"files[{i}] = {entry!r}: expected model, file, format and sha256"
        if file in seen:
            return f"files[{i}]: {file} is listed twice"
        seen.add(file)
    return manifest
