"""`regimed report --live [--since DATE] [--json] [--out FILE]`: the champions' live
predictions against their matured labels, per regime and per week or month, as an HTML page
(its path printed) or a JSON document.

Exit codes as for every command: 0 success; 2 usage (no store yet, no matured prediction yet).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daemon.cli.common import EXIT_OK, out_path, stored_config
from daemon.errors import UsageError

__all__ = ["cmd_live_report"]


def cmd_live_report(args: argparse.Namespace) -> int:
    """Write (or with --json print) the live report of the stored predictions."""
    from daemon.cli.training import _write_page
    from daemon.registry.versions import Registry
    from daemon.report.live import live_report
    from daemon.report.live_html import render_live_html
    from daemon.store.predictions import read_predictions
    from daemon.store.sqlite import Store

    config = stored_config(args)
    given = None if args.out is None else out_path(args.out)
    with Store.open(config.store, read_only=True) as store:
        predictions = read_predictions(store, since=args.since)
        champion = Registry(store).champion()
    matured = sum(1 for p in predictions if p.label is not None)
    if not matured:
        since = "" if args.since is None else f" from {args.since.isoformat()} on"
        detail = (
            f"{len(predictions):,} predictions stored{since}, none with its label yet"
            if predictions
            else f"no prediction stored{since}"
        )
        raise UsageError(
            f"{config.store.path}: no matured live prediction yet ({detail}): "
            "a champion scores live rows once a retrain promotes one, and a prediction's label "
            f"arrives label.horizon_bars = {config.label.horizon_bars} bars after its day"
        )
    report = live_report(
        predictions,
        since=args.since,
        champion=None if champion is None else champion.version,
        bootstrap_samples=config.gate.bootstrap_samples,
        block_days=config.gate.bootstrap_block_days,
        seed=config.training.seed,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    out = given or Path(config.store.path).resolve().parent / "reports" / "live.html"
    _write_page(out, render_live_html(report))
    print(out)
    return EXIT_OK
