"""`regimed models list | promote VERSION | verify`: the model registry from the command line.

Exit codes as for every command: 0 success; 1 runtime failure (verify found a problem, an
artifact was refused); 2 usage or configuration (including an unknown VERSION).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from daemon.cli.common import EXIT_FAILURE, EXIT_OK, stored_config
from daemon.config import Config
from daemon.errors import ModelNotFoundError, UsageError
from daemon.monitor.alerts import send_alert

if TYPE_CHECKING:
    from daemon.registry.versions import ModelRecord, Promotion, Registry
    from daemon.store.sqlite import Store

MANUAL_ROLLBACK = "manual rollback by regimed models promote"
MANUAL_PROMOTION = "manual promotion by regimed models promote"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `models` and its actions to the `regimed` subcommands (`common` holds --config)."""
    p = subparsers.add_parser(
        "models",
        parents=[common],
        help="list, promote (roll back) and verify registered models",
        description="The model registry: every trained version, its artifact and which one is "
        "champion. Artifacts live in models/ beside store.path.",
    )
    p.set_defaults(handler=_usage)
    actions = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))

    a = actions.add_parser(
        "list",
        parents=[common],
        help="every registered version",
        description="Every registered version, oldest first: when it was trained, its status, "
        "whether it is (*) or was champion, its overall validation balanced accuracy and the "
        "start of its artifact's sha256.",
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(handler=cmd_list)

    a = actions.add_parser(
        "promote",
        parents=[common],
        help="make VERSION the champion (e.g. roll back)",
        description="Make VERSION the champion after verifying its artifact, and record the "
        "change in the promotion history. A refused artifact leaves the champion unchanged, "
        "exits 1 and sends an alert.",
    )
    a.add_argument("version", metavar="VERSION", help="a version from `regimed models list`")
    a.set_defaults(handler=cmd_promote)

    a = actions.add_parser(
        "verify",
        parents=[common],
        help="recompute every artifact's hashes and check its permissions",
        description="Check every registered artifact against the sha256 in the registry "
        "(manifest and each file), and that no file is a symlink or writable by group or "
        "others. Prints one line per model; exits 1 and sends an alert on any problem.",
    )
    a.set_defaults(handler=cmd_verify)


def _usage(args: argparse.Namespace) -> int:
    raise UsageError("regimed models: expected an action: list, promote VERSION or verify")


def _open(args: argparse.Namespace, *, read_only: bool) -> tuple[Config, Store]:
    from daemon.store.sqlite import Store

    config = stored_config(args)
    return config, Store.open(config.store, read_only=read_only)


def _registry(config: Config, store: Store) -> Registry:
    from daemon.registry.versions import Registry

    return Registry(store, alert=partial(send_alert, config.alerts))


def cmd_list(args: argparse.Namespace) -> int:
    """Print every registered version (a table, or a JSON list with --json)."""
    config, store = _open(args, read_only=True)
    with store:
        registry = _registry(config, store)
        models, promotions = registry.models(), registry.promotions()
    if args.json:
        print(json.dumps([_as_json(m, promotions) for m in models], indent=2))
    else:
        print(render(models, promotions), end="")
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    """Make VERSION the champion after verifying its artifact."""
    config, store = _open(args, read_only=False)
    with store:
        registry = _registry(config, store)
        was_champion = any(p.version == args.version for p in registry.promotions())
        reason = MANUAL_ROLLBACK if was_champion else MANUAL_PROMOTION
        try:
            promotion = registry.promote(args.version, reason=reason)
        except ModelNotFoundError as exc:
            raise UsageError(str(exc)) from None
    if promotion is None:
        print(f"{args.version} is already the champion")
    else:
        before = promotion.previous_version or "none"
        print(f"{args.version} is now the champion (was {before}); recorded: {reason}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every registered artifact; exit 1 (and alert) on any problem."""
    config, store = _open(args, read_only=True)
    with store:
        registry = _registry(config, store)
        results = registry.verify()
        strays = registry.unregistered()
    if not results:
        print("no registered models")
    width = max((len(v) for v in [*results, *(p.name for p in strays)]), default=0)
    for version, problems in results.items():
        if not problems:
            print(f"{version:<{width}}  ok")
        for problem in problems:
            print(f"{version:<{width}}  FAILED  {problem}")
    for path in strays:
        # Not a failure: the bundle was never in use. Left for the operator to remove.
        print(
            f"{path.name:<{width}}  unregistered  {path}: no registry row in this store (a "
            "retrain killed before registering it, or another store's); remove it if unused"
        )
    failed = sum(1 for problems in results.values() if problems)
    if failed:
        print(f"error: {failed} of {len(results)} artifacts failed verification", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def render(models: list[ModelRecord], promotions: list[Promotion]) -> str:
    """The `models list` table; * marks the champion, `promoted` the last time it became one."""
    if not models:
        return "no registered models\n"
    last = {p.version: p.promoted_at for p in promotions}
    rows = [("", "version", "trained_at", "status", "promoted", "bal_acc", "sha256")]
    for m in models:
        promoted = last.get(m.version)
        rows.append(
            (
                "*" if m.status == "champion" else "",
                m.version,
                m.trained_at.isoformat(timespec="minutes"),
                m.status,
                "-" if promoted is None else promoted.isoformat(timespec="minutes"),
                "-" if m.balanced_accuracy is None else f"{m.balanced_accuracy:.4f}",
                m.sha256[:12],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _as_json(model: ModelRecord, promotions: list[Promotion]) -> dict[str, Any]:
    return {
        "version": model.version,
        "trained_at": model.trained_at.isoformat(),
        "status": model.status,
        "champion": model.status == "champion",
        "promoted_at": [
            p.promoted_at.isoformat() for p in promotions if p.version == model.version
        ],
        "balanced_accuracy": model.balanced_accuracy,
        "accuracy": model.accuracy,
        "trigger": model.trigger,
        "sha256": model.sha256,
        "path": model.path,
        "report": model.report,
    }
