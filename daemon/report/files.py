"""A report's files written into its folder, each through a temporary name, so a reader never
sees half a file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from daemon.errors import RegimedError

__all__ = ["write_files"]


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each text of `files` (name -> text) into `directory` (created if needed); the
    written paths. RegimedError naming the folder when it cannot be written."""
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = directory / name
            partial = directory / f".{name}.partial"
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
            written.append(path)
    except OSError as exc:
        raise RegimedError(f"{directory}: cannot write the report: {exc.strerror or exc}") from None
    return written
