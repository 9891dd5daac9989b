"""What every `regimed` command shares: the exit codes, the configuration a command runs with,
and the check of an `--out` path.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (the message names the
key, file or argument). systemd's `RestartPreventExitStatus=2` relies on that split.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from daemon.config import Config, load_config
from daemon.errors import UsageError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "command_config", "out_path", "stored_config"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger("regimed")


def command_config(args: argparse.Namespace) -> Config:
    """The configuration of `--config` (or the default file, or the built-in defaults)."""
    config, source = load_config(args.config)
    logger.debug("configuration from %s", source or "built-in defaults")
    return config


def stored_config(args: argparse.Namespace) -> Config:
    """The configuration of a command that reads an existing store: UsageError when there is
    no database at `store.path` yet (such a command never creates one). A PostgreSQL store
    (`store.url`) is checked when it is opened."""
    config = command_config(args)
    if not config.store.url and not Path(config.store.path).exists():
        raise UsageError(
            f"store.path = {config.store.path!r}: no database there yet (start `regimed run` "
            "or `regimed demo` first, or point --config at the daemon's configuration)"
        )
    return config


def out_path(text: str | os.PathLike[str]) -> Path:
    """An `--out` path, checked before any work is done: its folder must exist and be
    writable (UsageError naming the folder), so a long command never fails at its last step."""
    out = Path(text)
    folder = out.absolute().parent
    if not folder.is_dir():
        raise UsageError(f"--out {text}: no directory {str(folder)!r} to write into")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {text}: the directory {str(folder)!r} is not writable")
    return out
