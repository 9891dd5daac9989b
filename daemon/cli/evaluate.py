"""`regimed evaluate`: the walk-forward evaluation of regime-aware training."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from typing import Any

from daemon.cli.common import (
    EXIT_OK,
    add_history_options,
    command_config,
    fold_progress,
    out_path,
)
from daemon.errors import UsageError
from daemon.report.progress import Progress


def _models(text: str) -> tuple[str, ...]:
    from daemon.config.training import MODEL_NAMES

    if text.strip() == "all":
        return MODEL_NAMES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in MODEL_NAMES:
            raise UsageError(
                f"--models {text}: unknown model {name!r}; expected 'all' or a comma-separated "
                f"list of {', '.join(MODEL_NAMES)}"
            )
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--models {text}: expected distinct model names")
    return names


def _day(flag: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text}: expected a date as YYYY-MM-DD") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Walk forward over the history, print the results, write the report."""
    from daemon.config.evaluate import EvaluateConfig
    from daemon.training.threads import resolve_n_jobs, thread_limits

    config = command_config(args)
    if args.target is not None:
        config = config.replace(label=dataclasses.replace(config.label, target=args.target))
    out = out_path(args.out)  # a folder, created if its parent exists
    settings: EvaluateConfig = config.evaluate
    changes: dict[str, Any] = {}
    if args.models is not None:
        changes["models"] = _models(args.models)
    start = _day("--start", args.start)
    if start is not None:
        changes["start"] = start
    if args.step is not None:
        changes["step"] = args.step
    settings = dataclasses.replace(settings, **changes)
    end = _day("--end", args.end)
    if end is not None and end <= settings.start:
        raise UsageError(f"--end {end}: expected a day after the start ({settings.start})")
    if args.vix is not None and not args.bars:
        raise UsageError("--vix needs --bars (the bundled history has its own VIX)")
    meter = Progress(sys.stderr)
    progress = fold_progress(meter)

    # The thread limits before the numeric libraries load (daemon.training.threads).
    with thread_limits(resolve_n_jobs(settings.n_jobs)):
        from daemon.evaluation import evaluate, load_csvs
        from daemon.report.evaluation import render_text, write_report

        histories = load_csvs(args.bars, args.vix) if args.bars else None
        evaluation = evaluate(config, settings, histories, end=end, progress=progress)
    meter.clear()
    written = write_report(evaluation, out)
    if args.json:
        print(json.dumps(evaluation.doc, indent=2))
    else:
        print(render_text(evaluation.doc), end="")
        print(f"\nreport: {', '.join(str(p) for p in written)}")
        print(f"took {evaluation.doc['duration_seconds']:.0f} s")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `evaluate` to the subcommands."""
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="walk-forward evaluation: does regime-aware training help?",
        description="Retrain every evaluate.step from evaluate.start on an expanding window of "
        "the history (bundled S&P 500 and NASDAQ, or --bars CSVs) and test on the next step's "
        "bars: baseline, +weights, +balancing, +archive and all three, with the naive "
        "references and a shuffled-label control. Prints balanced accuracy and accuracy per "
        "regime with 95% block-bootstrap intervals; writes evaluation.md and evaluation.html "
        "into --out. docs/evaluation.md explains the method.",
    )
    add_history_options(p, out="evaluation")
    p.add_argument(
        "--models",
        metavar="M[,M...]",
        help="base models of the vote, or 'all' for the eight (default evaluate.models)",
    )
    p.add_argument("--start", metavar="DATE", help="first cutoff (default evaluate.start)")
    p.add_argument("--end", metavar="DATE", help="test bars before this day only (default: all)")
    p.add_argument(
        "--step", choices=["quarter", "month", "year"], help="retrain every (default evaluate.step)"
    )
    p.add_argument(
        "--target",
        choices=["direction", "volatility", "drawdown"],
        help="the label to predict (default label.target; its parameters from [label])",
    )
    p.set_defaults(handler=cmd_evaluate)
