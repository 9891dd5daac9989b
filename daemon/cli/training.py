"""`regimed retrain` and `regimed report`: train now, and write a model's HTML report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.cli.common import EXIT_FAILURE, EXIT_OK, out_path, stored_config
from daemon.cli.predictions import _day
from daemon.errors import ModelNotFoundError, RegimedError, UsageError
from daemon.monitor.alerts import send_alert
from daemon.report.progress import Progress

if TYPE_CHECKING:
    from daemon.registry.versions import ModelRecord, Registry


def _progress(meter: Progress) -> Any:
    """A retrain progress callback: the stage and the model being fitted, a line per fitted
    base model."""

    def show(event: str, details: Mapping[str, Any]) -> None:
        if event == "stage":
            meter.update(f"{details['stage']} ...")
        elif event == "model_started":
            done, total = int(details["index"]), int(details["total"])
            meter.update(f"{done}/{total} fitting {details['model']}", done / total)
        elif event == "model_finished":
            meter.line(f"  {details['model']:<20} {float(details['seconds']):6.1f} s")

    return show


def cmd_retrain(args: argparse.Namespace) -> int:
    """Train a candidate now, gate it against the champion, print the report."""
    from daemon.training.threads import resolve_n_jobs, thread_limits

    config = stored_config(args)
    progress = None if args.json else _progress(Progress(sys.stderr))
    # No consumer to leave cores to: "auto" is every core; the threads still sleep when they
    # wait, for a daemon that may run beside. Set before the libraries load.
    # (LightGBM and XGBoost load during the fits: the limits hold for the whole run.)
    with thread_limits(resolve_n_jobs(config.training.n_jobs)):
        from daemon.errors import RetrainFailed
        from daemon.report.retrain_text import render
        from daemon.training.trainer import retrain

        alert = partial(send_alert, config.alerts)
        try:
            report = retrain(config, trigger=args.trigger, progress=progress, alert=alert)
        except RetrainFailed as exc:
            if args.json:
                print(json.dumps(exc.report, indent=2))
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render(report), end="")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Write a model's retrain report as one self-contained HTML page and print its path (or
    with --json print the stored report); with --live, the live report (daemon.cli.live)."""
    if args.live:
        if args.version is not None:
            raise UsageError(f"report --live takes no VERSION (got {args.version!r})")
        from daemon.cli.live import cmd_live_report

        return cmd_live_report(args)
    if args.since is not None:
        raise UsageError("--since goes with --live (the live report)")
    from daemon.registry.versions import Registry
    from daemon.report.retrain_html import render_html
    from daemon.store.sqlite import Store
    from daemon.training.report import RetrainReport

    config = stored_config(args)
    given = None if args.out is None else out_path(args.out)
    with Store.open(config.store, read_only=True) as store:
        record = _report_model(Registry(store), args.version, config.store.path)
    if args.json:
        print(json.dumps(record.report, indent=2))
        return EXIT_OK
    out = given or Path(config.store.path).resolve().parent / "reports" / f"{record.version}.html"
    _write_page(out, render_html(RetrainReport.from_json(record.report), model=record))
    print(out)
    return EXIT_OK


def _report_model(registry: Registry, version: str | None, where: str) -> ModelRecord:
    """VERSION, else the champion, else the latest registered model."""
    if version is not None:
        try:
            return registry.model(version)
        except ModelNotFoundError as exc:
            raise UsageError(str(exc)) from None
    record = registry.champion()
    if record is not None:
        return record
    models = registry.models()
    if not models:
        raise UsageError(f"{where}: no registered models yet (run `regimed retrain` first)")
    return models[-1]


def _write_page(out: Path, page: str) -> None:
    """Write `page` to `out` through a temporary file, so a reader never sees half of it."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise RegimedError(f"{out}: cannot write the report: {exc.strerror or exc}") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `retrain` and `report` to the subcommands."""
    p = sub.add_parser(
        "retrain",
        parents=[common],
        help="train a candidate now and promote it if it passes the gate",
        description="Fit the base models on the stored samples (live and archive), validate "
        "them per regime, gate the ensemble against the champion and register it. Only one "
        "retrain runs at a time per store.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--trigger",
        default="manual",
        choices=["manual", "schedule", "drift", "demo"],
        help="what started the run, as recorded in the registry (default manual)",
    )
    p.set_defaults(handler=cmd_retrain)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a model's retrain report as an HTML page with plots",
        description="Write the retrain report of VERSION (default: the champion, else the latest "
        "model) as one self-contained HTML file: the promotion decision, balanced and plain "
        "accuracy per regime of every model, the ensemble and the naive references, the regime "
        "mix before and after sampling, weight shares, confusion matrices, feature importances "
        "and fit times. Prints the file's path. With --live: the champions' live predictions "
        "against their matured labels, per regime and per week or month, with balanced "
        "accuracy and its 95% bootstrap interval (reports/live.html by default).",
    )
    p.add_argument(
        "version",
        nargs="?",
        default=None,
        metavar="VERSION",
        help="a version from `regimed models list` (default: the champion, else the latest)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="where to write (default: reports/VERSION.html, or reports/live.html, beside "
        "store.path)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="the live report: stored predictions against their matured labels",
    )
    p.add_argument(
        "--since",
        metavar="DATE",
        type=_day,
        default=None,
        help="with --live: only predictions from this day on (YYYY-MM-DD)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead")
    p.set_defaults(handler=cmd_report)
