"""Model artifacts kept in a shared store's database, so every host serves the same models.

On a PostgreSQL store (`store.url`) several daemons on several hosts share one registry, but
each host has its own disk. The registry therefore also writes every file of a bundle into the
database (`model_files`: version, file name, bytes) in the transaction that registers the
version (`publish`), and a host that finds no bundle directory for a registered version makes
it from those rows (`fetch`) before it verifies and loads it: the same directory, written the
same way (a private temporary directory renamed into place, files 0600), then checked against
the registry's sha256 exactly as a bundle written on this host. A row's bytes that differ from
what was registered fail that check like a damaged file.

An SQLite store keeps its bundles beside the file only, as before (`Store.shared`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from daemon.errors import ArtifactError
from daemon.registry.artifacts import _fsync_dir, _write_file
from daemon.registry.bundle import _TEMP_PREFIX
from daemon.store import SqlConnection, Store

__all__ = ["fetch", "publish"]


def publish(conn: SqlConnection, version: str, directory: str | os.PathLike[str]) -> int:
    """Insert every file of the bundle at `directory` as the `model_files` rows of `version`,
    inside the caller's transaction; how many files. No directory, no rows: as on an SQLite
    store, `Registry.add_model` takes the path as given, and verification on any host then
    reports the bundle missing."""
    folder = Path(directory)
    if not folder.is_dir():
        return 0
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        rows = [(version, name, (folder / name).read_bytes()) for name in names]
    except OSError as exc:
        raise ArtifactError(
            f"model version {version!r}: cannot read {exc.filename or folder}: "
            f"{exc.strerror or exc}"
        ) from None
    conn.executemany("INSERT INTO model_files (version, file, data) VALUES (?, ?, ?)", rows)
    return len(rows)


def fetch(store: Store, version: str, path: str | os.PathLike[str]) -> bool:
    """Make the bundle directory `path` of `version` from the store's `model_files` rows when
    this host has none; whether it did. Nothing happens on a store that keeps no artifacts,
    when `path` exists, or when the database holds no file of `version` (the check that
    follows then reports the bundle missing)."""
    final = Path(path)
    if not store.shared or os.path.lexists(final):
        return False
    with store.transaction(f"read the artifact of model {version!r}", write=False) as conn:
        rows = conn.execute(
            "SELECT file, data FROM model_files WHERE version = ? ORDER BY file", (version,)
        ).fetchall()
    if not rows:
        return False
    try:
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = Path(
            tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{version}-{os.getpid()}-", dir=final.parent)
        )
    except OSError as exc:
        raise ArtifactError(
            f"model version {version!r}: cannot write {exc.filename or final.parent}: "
            f"{exc.strerror or exc}"
        ) from None
    try:
        for name, data in rows:
            if "/" in name or name.startswith("."):
                raise ArtifactError(f"model version {version!r}: stored file name {name!r}")
            _write_file(temp / name, bytes(data))
        _fsync_dir(temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not final.is_dir():  # else another process of this host fetched it first
                raise
    except OSError as exc:
        raise ArtifactError(
            f"model version {version!r}: cannot write {exc.filename or final}: "
            f"{exc.strerror or exc}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(temp)
    return True
