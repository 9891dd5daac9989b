"""Checking and loading a model bundle: every byte verified against the registry's hash and the
manifest, and the file modes checked, before any model byte is parsed (`verify_bundle`,
`load_bundle`); see daemon.registry.artifacts for the layout."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from daemon.errors import ArtifactError
from daemon.registry.bundle import (
    _FORMATS,
    _HEX64,
    _NAME,
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_FORMAT_PARTS,
    SKOPS_TRUSTED_TYPES,
    VALIDATED,
    LightGBMBooster,
    LoadedBundle,
    _sha256,
    _skops_types,
    file_stem,
)

__all__ = ["load_bundle", "verify_bundle"]


def verify_bundle(path: str | os.PathLike[str], sha256: str) -> list[str]:
    """Every problem of the bundle at `path` against the registry's `sha256`; empty if sound.

    Checks what `load_bundle` checks except the skops types, without parsing any model.
    """
    with _Bundle(Path(path), sha256) as bundle:
        return bundle.problems


def load_bundle(
    path: str | os.PathLike[str],
    sha256: str,
    trusted: Mapping[str, Sequence[str]] | None = None,
) -> LoadedBundle:
    """The models of the bundle at `path`, after every check; ArtifactError on any problem.

    `sha256` is the hash the registry recorded; the message names the file and what is wrong.
    `trusted` is the current configuration's `trusted` list of each custom model, by name.

    A skops file may hold the project's `SKOPS_TRUSTED_TYPES`, and a type beyond them only when
    both the manifest (the model's `trusted` list when the bundle was saved) and `trusted` list
    it. Neither alone suffices: the manifest is pinned by the registry's hash, but the registry
    and the bundles live in the same store directory, so whoever can write one can write the
    other; the configuration is the operator's. And the manifest's list keeps a type the
    configuration trusts only now out of a bundle saved before.
    """
    current = trusted or {}
    with _Bundle(Path(path), sha256) as bundle:
        if bundle.problems:
            raise ArtifactError("; ".join(bundle.problems))
        parts: dict[str | None, dict[str, Any]] = {None: {}, VALIDATED: {}}
        for entry in bundle.manifest["files"]:
            parts[entry.get("part")][entry["model"]] = _load_model(
                bundle.path / entry["file"],
                entry,
                bundle.data[entry["file"]],
                tuple(current.get(entry["model"], ())),
            )
        return LoadedBundle(
            parts[None],
            dict(bundle.manifest.get("meta", {})),
            bundle.manifest,
            parts[VALIDATED],
        )


def _load_model(
    path: Path, entry: Mapping[str, Any], data: bytes, configured: tuple[str, ...]
) -> Any:
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
        import skops.io  # type: ignore[import-untyped]

        recorded = set(entry.get("trusted", ()))
        allowed = set(SKOPS_TRUSTED_TYPES) | (recorded & set(configured))
        untrusted = sorted(_skops_types(data) - allowed)
        if untrusted:
            raise ArtifactError(
                f"{path}: holds types outside daemon.registry.artifacts.SKOPS_TRUSTED_TYPES"
                f"{_why_untrusted(entry['model'], untrusted, recorded, set(configured))}; refused"
            )
        return skops.io.loads(data, trusted=sorted(allowed))
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot be read as {kind}: {exc}") from exc


def _why_untrusted(
    model: str, untrusted: list[str], recorded: set[str], configured: set[str]
) -> str:
    """Each refused type and which of the two lists lacks it."""
    parts = []
    for name in untrusted:
        lacks = [
            where
            for where, listed in (
                (f"models.{model}.trusted of the configuration", configured),
                ("the trusted list the manifest recorded when the bundle was saved", recorded),
            )
            if name not in listed
        ]
        parts.append(f"{name} (not in {' nor in '.join(lacks)})")
    return ": " + ", ".join(parts)


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
    if not isinstance(manifest, dict) or manifest.get("format") not in _KNOWN_FORMATS:
        return f"not a {' or '.join(_KNOWN_FORMATS)} manifest"
    parted = manifest["format"] == MANIFEST_FORMAT_PARTS
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return "lists no model files"
    seen: set[str] = set()
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            return f"files[{i}] is not an object"
        name, file, kind, digest = (entry.get(k) for k in ("model", "file", "format", "sha256"))
        part = entry.get("part")
        if part is not None and (not parted or part != VALIDATED):
            return f"files[{i}].part = {part!r}: expected no part or {VALIDATED!r} (format /2)"
        if (
            not isinstance(name, str)
            or not _NAME.fullmatch(name)
            or kind not in _FORMATS
            or file != f"{file_stem(name, part)}{_FORMATS[kind]}"
            or not isinstance(digest, str)
            or not _HEX64.fullmatch(digest)
        ):
            return f"files[{i}] = {entry!r}: expected model, file, format and sha256"
        listed = entry.get("trusted", [])
        if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
            return f"files[{i}].trusted = {listed!r}: expected a list of type names"
        if file in seen:
            return f"files[{i}]: {file} is listed twice"
        seen.add(file)
    if not any("part" not in entry for entry in files):
        return "lists no served model file"
    return manifest


#: The manifest formats this version reads: without and with a validated part.
_KNOWN_FORMATS = (MANIFEST_FORMAT, MANIFEST_FORMAT_PARTS)
