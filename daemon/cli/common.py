"""What every `regimed` command shares: the exit codes, the configuration a command runs with,
and the check of an `--out` path.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (the message names the
key, file or argument). systemd's `RestartPreventExitStatus=2` relies on that split.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.config import Config, load_config
from daemon.errors import UsageError
from daemon.report.progress import Progress, duration, remaining

if TYPE_CHECKING:
    from daemon.evaluation.data import Fold

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_history_options",
    "command_config",
    "fold_progress",
    "out_path",
    "stored_config",
]

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


def add_history_options(p: argparse.ArgumentParser, out: str) -> None:
    """`--bars`, `--vix`, `--out` (default ./`out`) and `--json` of the commands that walk
    forward over a history (`evaluate`, `backtest`)."""
    p.add_argument(
        "--bars",
        metavar="CSV",
        action="append",
        default=[],
        help="a daily OHLCV CSV of one symbol (the symbol is the file name); repeat for more. "
        "Default: the bundled ^GSPC and ^IXIC history",
    )
    p.add_argument("--vix", metavar="CSV", help="VIX closes for --bars (default: none, the proxy)")
    p.add_argument("--out", metavar="DIR", default=out, help=f"report directory (default ./{out})")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def fold_progress(meter: Progress) -> Callable[[int, int, Fold], None]:
    """The walk's progress callback: fold k of n, the time elapsed and an estimate of the time
    left. A fold's work grows with its training rows (the window expands), so the estimate is
    the pace per training row of the folds done so far, applied to the remaining folds at the
    size of the current one (a little short, as later folds are larger still)."""
    rows_done = 0
    rows_now = 0
    first_fold_at = 0.0  # loading the data before the first fold is not the folds' pace

    def progress(k: int, total: int, fold: Fold) -> None:
        nonlocal rows_done, rows_now, first_fold_at
        if k == 0:
            first_fold_at = meter.elapsed()
        rows_done += rows_now  # the fold before this one has finished
        rows_now = len(fold.train) + len(fold.archive)
        work = rows_done + rows_now * (total - k)
        if not meter.due():
            return
        elapsed = meter.elapsed()
        left = remaining(elapsed - first_fold_at, rows_done, work)
        estimate = "" if left is None else f", about {duration(left)} left"
        meter.update(
            f"fold {k + 1}/{total} (cutoff {fold.cutoff}), {duration(elapsed)} elapsed{estimate}",
            rows_done / work if work else None,
        )

    return progress
