"""`regimed store migrate --from SQLITE_PATH --to URL`: move a single-host store into the
PostgreSQL database that several daemons will share.

Copies every table (bars, samples, offsets, outbox, dead letters, registry rows, promotions,
retrain runs, predictions, counters) and the files of every registered model bundle found
beside the SQLite file, in one transaction of the target, and commits only when each table's
row count and sha256 and every bundle file's sha256 match the source's
(daemon.store.transfer). The target must be a database regimed has not written rows to.

Stop the daemon that writes the SQLite store first: rows it writes during the copy are not
copied. Exit codes: 0 copied and verified; 1 a difference or a database error (nothing
committed); 2 usage (no file at --from, a bad --to URL).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.cli.common import EXIT_OK, command_config
from daemon.config import StoreConfig
from daemon.errors import UsageError

__all__ = ["cmd_store_migrate", "register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `store migrate` to the `regimed` subcommands (`common` holds --config)."""
    p = subparsers.add_parser(
        "store",
        parents=[common],
        help="move a store between engines",
        description="Commands on the store itself.",
    )
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", parser_class=type(p))
    m = actions.add_parser(
        "migrate",
        parents=[common],
        help="copy an SQLite store into an empty PostgreSQL database, verified",
        description="Copy every row of the SQLite store at --from, and the model bundles "
        "beside it, into the PostgreSQL database at --to in one transaction, verified by row "
        "counts and sha256 per table before it commits. The password comes from "
        "store.password of --config or PGPASSWORD.",
    )
    m.add_argument("--from", dest="source", required=True, metavar="SQLITE_PATH")
    m.add_argument("--to", dest="target", required=True, metavar="URL")
    m.set_defaults(handler=cmd_store_migrate)
    p.set_defaults(handler=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    raise UsageError(f"{parser.prog}: expected an action (migrate)")


def cmd_store_migrate(args: argparse.Namespace) -> int:
    """Copy, verify, print one line per table."""
    from daemon.registry.versions import Registry
    from daemon.store.postgres import PostgresStore
    from daemon.store.sqlite import Store
    from daemon.store.transfer import copy_store

    config = command_config(args)
    if not Path(args.source).is_file():
        raise UsageError(f"--from {args.source}: no SQLite store there")
    target_config = StoreConfig(
        path=config.store.path, url=args.target, password=config.store.password
    )  # checks the URL like store.url
    with Store(args.source, read_only=True) as source:
        bundles = {m.version: m.path for m in Registry(source).models() if os.path.isdir(m.path)}
        with PostgresStore.connect(target_config) as target:
            done = copy_store(source, target, extra=lambda conn: [_copy_bundles(conn, bundles)])
    for check in done.checks:
        print(f"{check.table:<14} {check.target_rows:>10} rows  sha256 {check.target_sha256}")
    print(f"verified: {len(done.checks)} tables equal to {args.source}")
    return EXIT_OK


def _copy_bundles(conn: Any, bundles: dict[str, str]) -> Any:
    """Publish each bundle's files and compare (version, file, sha256) on both sides."""
    from daemon.registry.shared import publish
    from daemon.store.transfer import TableCheck

    for version, path in sorted(bundles.items()):
        publish(conn, version, path)
    source = _digest(
        (version, p.name, p.read_bytes())
        for version, path in sorted(bundles.items())
        for p in sorted(Path(path).iterdir())
        if p.is_file() and not p.is_symlink()
    )
    target = _digest(
        (str(v), str(f), bytes(d))
        for v, f, d in conn.execute(
            "SELECT version, file, data FROM model_files ORDER BY version, file"
        )
    )
    return TableCheck("model_files", source[0], target[0], source[1], target[1])


def _digest(files: Iterable[tuple[str, str, bytes]]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for version, name, data in files:
        digest.update(f"{version}/{name} {hashlib.sha256(data).hexdigest()}\n".encode())
        count += 1
    return count, digest.hexdigest()
