"""`regimed predictions [--symbol S] [--since DATE] [--json | --csv]`: the champion's stored
predictions with their outcome once the label has matured, and the model version of each.

Exit codes as for every command: 0 success; 2 usage (a bad `--since`, no store yet).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

from daemon.cli.common import EXIT_OK, stored_config

__all__ = ["cmd_predictions", "register"]

#: The fields of a prediction in --json and --csv, in this order.
FIELDS = (
    "symbol", "ts", "regime", "model_version", "probability", "prediction", "label", "correct",
)  # fmt: skip


def _day(text: str) -> dt.date:
    """A `--since` day: YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; expected YYYY-MM-DD, e.g. 2020-03-23"
        ) from None


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add `predictions` to the `regimed` subcommands (`common` holds --config)."""
    p = subparsers.add_parser(
        "predictions",
        parents=[common],
        help="stored predictions with their outcome and model version",
        description="The live predictions in the store, oldest first: the day, the symbol, "
        "the regime, the model version that made it, the probability of up, the prediction, "
        "and once label.horizon_bars bars have passed the label and whether the prediction "
        "was right.",
    )
    p.add_argument("--symbol", metavar="S", help="only this symbol")
    p.add_argument("--since", metavar="DATE", type=_day, help="only from this day (YYYY-MM-DD)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="a JSON list of objects")
    form.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(handler=cmd_predictions)


def cmd_predictions(args: argparse.Namespace) -> int:
    """Print the stored predictions (a table, JSON or CSV)."""
    from daemon.store.predictions import read_predictions
    from daemon.store.sqlite import Store

    config = stored_config(args)
    with Store.open(config.store, read_only=True) as store:
        rows = read_predictions(store, symbol=args.symbol, since=args.since)
    docs = [{f: getattr(row, f) for f in FIELDS} for row in rows]
    if args.json:
        print(json.dumps(docs, indent=2))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(docs)
    else:
        sys.stdout.write(render(docs))
    return EXIT_OK


def render(docs: Sequence[dict[str, Any]]) -> str:
    """The predictions as a text table with a summary line."""
    if not docs:
        return "no predictions stored (none match, or no champion has scored a live row yet)\n"
    head = ("day", "symbol", "regime", "model", "p(up)", "pred", "label", "outcome")
    lines = [
        (
            d["ts"], d["symbol"], d["regime"] or "-", d["model_version"],
            f"{d['probability']:.3f}", str(d["prediction"]),
            "-" if d["label"] is None else str(d["label"]),
            {None: "pending", True: "right", False: "wrong"}[d["correct"]],
        )
        for d in docs
    ]  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    matured = [d for d in docs if d["correct"] is not None]
    right = sum(1 for d in matured if d["correct"])
    share = f", {right / len(matured):.1%} right" if matured else ""
    out.append(f"\n{len(docs)} predictions, {len(matured)} with their label{share}")
    return "\n".join(out) + "\n"
