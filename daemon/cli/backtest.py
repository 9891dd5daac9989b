"""`regimed backtest`: regime- and model-driven exposure against buy-and-hold, walk-forward."""

from __future__ import annotations

import argparse
import json
import math
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


def _cost_bps(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--cost-bps {text}: expected basis points per unit of turnover, >= 0")
    return value


def cmd_backtest(args: argparse.Namespace) -> int:
    """Walk forward over the history, trade every strategy, print the figures, write the
    report."""
    from daemon.training.threads import resolve_n_jobs, thread_limits

    cost = _cost_bps(args.cost_bps)
    if args.vix is not None and not args.bars:
        raise UsageError("--vix needs --bars (the bundled history has its own VIX)")
    config = command_config(args)
    out = out_path(args.out)
    meter = Progress(sys.stderr)

    progress = fold_progress(meter)
    # The thread limits before the numeric libraries load (daemon.training.threads).
    with thread_limits(resolve_n_jobs(config.evaluate.n_jobs)):
        from daemon.evaluation import load_csvs
        from daemon.evaluation.backtest import TARGETS, backtest
        from daemon.report.backtest import render_text, write_report

        if args.target is not None and args.target not in TARGETS:
            raise UsageError(
                f"--target {args.target}: expected one of {', '.join(TARGETS)} (the targets "
                "whose predictions the backtest turns into exposure)"
            )
        histories = load_csvs(args.bars, args.vix) if args.bars else None
        result = backtest(config, histories, target=args.target, cost_bps=cost, progress=progress)
    meter.clear()
    written = write_report(result, out)
    if args.json:
        print(json.dumps(result.doc, indent=2))
    else:
        print(render_text(result.doc), end="")
        print(f"\nreport: {', '.join(str(p) for p in written)}")
        print(f"took {result.doc['duration_seconds']:.0f} s")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `backtest` to the subcommands."""
    p = sub.add_parser(
        "backtest",
        parents=[common],
        help="does it help a trader? strategies against buy-and-hold, walk-forward, with costs",
        description="Trade the market (the bundled S&P 500 and NASDAQ, or --bars CSVs) with "
        "buy-and-hold, the rule regimes (out in crash and high_volatility), the walk-forward "
        "models of `regimed evaluate` for the label target and volatility targeting: "
        "each exposure decided at a bar's close and held through the next bar, costs charged "
        "per unit of turnover. Prints CAGR, volatility, Sharpe, Sortino, maximum drawdown, "
        "Calmar, turnover and time in the market overall and inside each archive event, with "
        "block-bootstrap intervals of the differences to buy-and-hold; writes backtest.md and "
        "backtest.html into --out. docs/backtest.md explains the method.",
    )
    add_history_options(p, out="backtest")
    p.add_argument(
        "--target",
        metavar="T",
        help="the label target whose models trade (default label.target): direction (long "
        "when up is predicted), volatility or drawdown (out when rising volatility or a "
        "drawdown is predicted)",
    )
    p.add_argument(
        "--cost-bps",
        metavar="B",
        help="transaction cost in basis points per unit of turnover (default backtest.cost_bps)",
    )
    p.set_defaults(handler=cmd_backtest)
