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
directory or a complete one. Reading (daemon.registry.loading; the formats and the trusted types
are in daemon.registry.bundle) checks, before any model byte is parsed: the manifest's hash
against the registry's, every file's hash against the manifest, no symlinks, no file or
directory writable by group or others, no missing or unexpected file; skops files may hold only
the types in `SKOPS_TRUSTED_TYPES`. Every file is read once through a descriptor and parsed from
those verified bytes, so nothing can be swapped between the check and the load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daemon.errors import ArtifactError
from daemon.registry.bundle import (
    _NAME,
    _TEMP_PREFIX,
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_FORMAT_PARTS,
    SKOPS_TRUSTED_TYPES,
    VALIDATED,
    LightGBMBooster,
    LoadedBundle,
    SavedArtifact,
    _sha256,
    _skops_types,
    file_stem,
)
from daemon.registry.loading import load_bundle, verify_bundle

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
# -- saving --------------------------------------------------------------------------------


def save_bundle(
    root: Path,
    version: str,
    models: Mapping[str, Any],
    meta: Mapping[str, Any],
    trusted: Mapping[str, Sequence[str]] | None = None,
    validated: Mapping[str, Any] | None = None,
) -> SavedArtifact:
    """Write `models` and `meta` as `<root>/<version>/` atomically and return its sha256.

    `validated`: the members as they were validated, when `models` are their refit (kept for
    the gate's comparisons; daemon.registry.bundle.VALIDATED). Such a bundle is written as
    `MANIFEST_FORMAT_PARTS`, with every file pinned by the one manifest hash as the others.

    Any failure (a model that cannot be written, a skops type outside `SKOPS_TRUSTED_TYPES`,
    meta that is not JSON, a full disk) removes the temporary directory and re-raises: no
    partial version directory is ever visible. An existing version directory is never replaced.
    A write the system refuses (a full disk, a file size limit, permissions) raises
    ArtifactError naming the file.

    `trusted` gives a custom model's types beyond `SKOPS_TRUSTED_TYPES` (its `trusted` list,
    by model name); the manifest records each such list beside the model's file, so the hash
    the registry keeps pins it too (daemon.registry.loading says how loading uses it).
    """
    try:
        return _save_bundle(Path(root), version, models, meta, trusted or {}, validated or {})
    except OSError as exc:
        raise ArtifactError(
            f"model version {version!r}: cannot write {exc.filename or root}: "
            f"{exc.strerror or exc}"
        ) from None


def _save_bundle(
    root: Path,
    version: str,
    models: Mapping[str, Any],
    meta: Mapping[str, Any],
    trusted: Mapping[str, Sequence[str]],
    validated: Mapping[str, Any],
) -> SavedArtifact:
    check_version(version)
    if not models:
        raise ArtifactError(f"model version {version!r}: no models to save")
    for name in (*models, *validated):
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
        parts: list[tuple[str | None, Mapping[str, Any]]] = [(None, models)]
        if validated:
            parts.append((VALIDATED, validated))
        entries = [
            _save_model(temp, name, model, tuple(trusted.get(name, ())), part)
            for part, members in parts
            for name, model in members.items()
        ]
        manifest = {
            "format": MANIFEST_FORMAT_PARTS if validated else MANIFEST_FORMAT,
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


def _save_model(
    directory: Path, name: str, model: Any, trusted: tuple[str, ...], part: str | None = None
) -> dict[str, Any]:
    """Write one model into `directory` in its format; its manifest entry (with `trusted`, the
    model's own trusted types, when it has any, and `part` when it is not a served member)."""
    import lightgbm
    import xgboost

    entry: dict[str, Any] = {"model": name}
    stem = file_stem(name, part)
    if part is not None:
        entry["part"] = part
    if isinstance(model, xgboost.XGBModel):
        if not isinstance(model, xgboost.XGBClassifier):
            raise ArtifactError(f"model {name!r}: {type(model).__name__}: expected a classifier")
        data = _xgboost_bytes(model)
        file = directory / f"{stem}.ubj"
        _write_file(file, data)
        entry.update(file=file.name, format="xgboost-ubj", sha256=_sha256(data))
        return entry
    if isinstance(model, lightgbm.LGBMModel | lightgbm.Booster | LightGBMBooster):
        booster, classes = _lightgbm_parts(name, model)
        data = booster.model_to_string().encode("utf-8")
        file = directory / f"{stem}.txt"
        _write_file(file, data)
        entry.update(file=file.name, format="lightgbm-text", classes=classes, sha256=_sha256(data))
        return entry
    import skops.io  # type: ignore[import-untyped]

    data = skops.io.dumps(model)
    untrusted = sorted(_skops_types(data) - set(SKOPS_TRUSTED_TYPES) - set(trusted))
    if untrusted:
        where = (
            f"daemon.registry.artifacts.SKOPS_TRUSTED_TYPES or models.{name}.trusted"
            if trusted
            else "daemon.registry.artifacts.SKOPS_TRUSTED_TYPES"
        )
        raise ArtifactError(
            f"model {name!r}: {type(model).__name__} holds types outside {where}: "
            f"{', '.join(untrusted)}; a bundle must be loadable, so it is not written (a "
            f"custom model lists the types it may hold in models.{name}.trusted)"
        )
    file = directory / f"{stem}.skops"
    _write_file(file, data)
    entry.update(file=file.name, format="skops", sha256=_sha256(data))
    if trusted:
        entry["trusted"] = sorted(set(trusted))
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
