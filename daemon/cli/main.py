"""The `regimed` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (the message names the
key, file or argument). systemd's `RestartPreventExitStatus=2` relies on that split.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli import backtest as cli_backtest
from daemon.cli import evaluate as cli_evaluate
from daemon.cli import models as cli_models
from daemon.cli import predictions as cli_predictions
from daemon.cli import stores as cli_stores
from daemon.cli import training as cli_training
from daemon.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    command_config,
    out_path,
    stored_config,
)
from daemon.cli.demo import run_demo, sigterm_as_interrupt
from daemon.config import StoreConfig, load_config
from daemon.errors import ConfigError, DataError, RegimedError, UsageError

logger = logging.getLogger("regimed")

Handler = Callable[[argparse.Namespace], int]


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration, secrets masked; exit 2 on any bad value or on a
    custom model whose factory or estimator is refused."""
    path = args.path if args.path is not None else args.config
    config, source = load_config(path)
    if config.models.custom:  # imports the factories: only when there are any (no numpy else)
        from daemon.training.custom import check_custom_models

        check_custom_models(config)
    overrides = sorted(k for k in os.environ if k.startswith("REGIMED_") and k != "REGIMED_CONFIG")
    origin = source or "built-in defaults"
    if args.changed:
        print(f"# what differs from the built-in defaults in the configuration from {origin}")
    else:
        print(f"# effective configuration from {origin}")
    if overrides:
        print(f"# environment overrides: {', '.join(overrides)}")
    text = config.to_toml(changed_only=args.changed)
    print(text or "# nothing: every value is the built-in default\n", end="")
    return EXIT_OK


def cmd_regimes(args: argparse.Namespace) -> int:
    """Label a daily price history offline and summarise days per regime."""
    from daemon.pipeline.offline import label_csv, summary, write_labels

    config = command_config(args)
    out = None if args.out is None else out_path(args.out)
    frame = label_csv(config.regime, args.bars, args.vix)
    if out is not None:
        try:
            with open(out, "w", encoding="utf-8", newline="") as handle:
                write_labels(frame, handle)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
        sys.stdout.write(summary(frame, str(args.bars)))
        sys.stdout.write(f"\n  labels written to {args.out}\n")
    else:
        write_labels(frame, sys.stdout)
        sys.stdout.flush()
        sys.stderr.write("\n" + summary(frame, str(args.bars)))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print what is stored, the champion model and the next retrain."""
    import json

    from daemon.runtime.status import render, status
    from daemon.store.sqlite import Store

    config = stored_config(args)
    with Store.open(config.store, read_only=True) as store:
        doc = status(config, store)
    print(json.dumps(doc, indent=2) if args.json else render(doc), end="\n" if args.json else "")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT (or the given limits)."""
    # First: a stop asked during the imports and the start-up below is a clean stop, not 143.
    stop = _stop_on_signals()
    from daemon.runtime.service import Service

    config = command_config(args)
    service = Service(config, reload=lambda: load_config(args.config)[0], stop_event=stop)
    # Everything loaded so far (modules, configuration) lives as long as the daemon: keep it
    # out of the collector's generations, which then walk only what consuming allocates.
    gc.freeze()
    with service.signals():
        service.run(max_messages=args.max_messages, timeout_s=args.timeout)
    return EXIT_OK


def _stop_on_signals() -> Any:
    """A `threading.Event` that SIGTERM and SIGINT set from now on (the service installs its
    own handlers, which set the same event, once it runs)."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop on the bundled history: broker, replay, daemon, archive, one retrain."""

    config = command_config(args)
    if args.target is not None:
        config = config.replace(label=dataclasses.replace(config.label, target=args.target))
    if args.store_url:
        try:
            StoreConfig(url=args.store_url)
        except ConfigError as exc:
            raise UsageError(f"--store-url {args.store_url}: {exc}") from None
    try:
        with sigterm_as_interrupt():
            run_demo(
                config,
                state_dir=args.state_dir,
                store_url=args.store_url or "",
                exit_after_retrain=args.exit_after_retrain,
                metrics_port=args.metrics_port,
            )
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Publish bars to the market-data topic."""
    from consumers import replay

    config = command_config(args)
    topic = args.topic or config.kafka.topic
    vix_symbol = config.regime.vix_symbol
    total: int | None
    if args.csv is not None:
        if not args.symbol:
            raise UsageError("replay --csv needs --symbol (the symbol the bars belong to)")
        events: Any = replay.csv_events(args.csv, args.symbol)
        total = len(events)
    elif args.bundled:
        events = replay.bundled_events(vix_symbol)
        total = len(events)
    elif args.synthetic is not None:
        if args.synthetic < 1:
            raise UsageError(f"--synthetic {args.synthetic}: expected at least 1 symbol")
        events = replay.synthetic_events(
            args.synthetic, args.days, args.seed, vix_symbol=vix_symbol
        )
        total = args.days * (args.synthetic + 1)
    else:
        symbols = [s.strip() for s in args.yahoo.split(",") if s.strip()]
        events = replay.yahoo_events(symbols, args.start, args.end, vix_symbol)
        total = len(events)
    replay.ensure_topic(config.kafka, topic, args.partitions)
    sent = replay.publish(
        config.kafka, events, topic=topic, rate=args.rate, total=total, progress=not args.quiet
    )
    print(f"published {sent} bars to {topic}")
    return EXIT_OK


def cmd_archive_build(args: argparse.Namespace) -> int:
    """Build the rare-event archive into the store and print what each event contributed."""
    from daemon.store.sqlite import Store
    from daemon.training.archive import build_archive, render

    config = command_config(args)
    with Store.open(config.store) as store:
        report = build_archive(config, store, args.source)
    print(render(report), end="")
    if report.total == 0:
        print(f"error: no archive event has data in {report.where}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _archive_usage(args: argparse.Namespace) -> int:
    raise UsageError("regimed archive: expected an action: build")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the exit-code path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _common_options(*, defaults: bool) -> _Parser:
    """`--config` and `--log-level`, accepted before the command and after it.

    The main parser holds the defaults; every subcommand's copy leaves an option it was not
    given out of the namespace (SUPPRESS), so `regimed --config X CMD` and `regimed CMD --config
    X` mean the same: without that, a subcommand's default would overwrite the value given
    before the command.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None if defaults else argparse.SUPPRESS,
        help="configuration file (default: $REGIMED_CONFIG, ./config.toml, "
        "/etc/regimed/config.toml, else built-in defaults)",
    )
    common.add_argument(
        "--log-level",
        default="INFO" if defaults else argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default INFO)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    common = _common_options(defaults=False)
    parser = _Parser(
        prog="regimed",
        description="Label market regimes as bars arrive and keep models that remember crashes.",
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"regimed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "regimes",
        parents=[common],
        help="label a daily price history offline",
        description="Label every trading day of a CSV price history with its market regime. "
        "Reads yfinance exports (multi-row headers included) and plain Date/OHLCV files; "
        "writes date, close, vix, vix_source, regime.",
    )
    p.add_argument("--bars", required=True, type=Path, metavar="CSV", help="daily OHLCV bars")
    p.add_argument(
        "--vix", type=Path, metavar="CSV", help="daily VIX closes (without it: the VIX proxy)"
    )
    p.add_argument(
        "--out", type=Path, metavar="CSV", help="write labels here (default: standard output)"
    )
    p.set_defaults(handler=cmd_regimes)

    p = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a configuration and print the effective values",
        description="Print the effective configuration (file plus REGIMED_ environment "
        "overrides) with secrets masked, or with --changed only what differs from the "
        "built-in defaults. Exits 2 and names the key on any bad value.",
    )
    p.add_argument("path", nargs="?", default=None, help="file to check (default: --config)")
    p.add_argument(
        "--changed",
        action="store_true",
        help="print only the values that differ from the built-in defaults",
    )
    p.set_defaults(handler=cmd_check_config)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the daemon",
        description="Consume market data from Kafka into the store until SIGTERM or SIGINT.",
    )
    p.add_argument("--max-messages", type=int, default=None, help="stop after N records")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "replay",
        parents=[common],
        help="publish bars to the market-data topic",
        description="Publish daily bars in time order (key = symbol; VIX as ^VIX).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", metavar="FILE", help="a yfinance or Date/OHLCV CSV of one symbol")
    source.add_argument(
        "--bundled", action="store_true", help="the bundled S&P 500, NASDAQ and VIX history"
    )
    source.add_argument(
        "--synthetic", type=int, metavar="N", help="N synthetic regime-switching symbols"
    )
    source.add_argument("--yahoo", metavar="SYMBOLS", help="comma-separated Yahoo symbols")
    p.add_argument("--symbol", help="the symbol of --csv bars")
    p.add_argument("--start", default="2000-01-01", help="--yahoo: first day (YYYY-MM-DD)")
    p.add_argument("--end", default=None, help="--yahoo: day after the last (default today)")
    p.add_argument("--days", type=int, default=1000, help="--synthetic: trading days")
    p.add_argument("--seed", type=int, default=0, help="--synthetic: random seed")
    p.add_argument("--topic", help="topic (default kafka.topic)")
    p.add_argument("--partitions", type=int, default=1, help="partitions if the topic is new")
    p.add_argument("--rate", type=float, default=None, help="at most this many bars per second")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="what is stored, the champion, the next retrain",
        description="Bars and samples stored, rejected events, champion model, last and next "
        "retrain.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "archive",
        parents=[common],
        help="the rare-event archive",
        description="Samples of past crises (the [archive] events) kept beside the live ones.",
    )
    p.set_defaults(handler=_archive_usage)
    archive = p.add_subparsers(dest="archive_command", metavar="ACTION", parser_class=_Parser)
    p = archive.add_parser(
        "build",
        parents=[common],
        help="build the archive samples into the store",
        description="Featurise the history of archive.symbols around each [archive] event with "
        "the live feature and label code and store the samples inside the event windows "
        "(source 'archive'), shared out by the events' budget shares. Rebuilding is idempotent.",
    )
    p.add_argument(
        "--source",
        choices=["bundled", "yahoo"],
        default="bundled",
        help="bundled: the history in the package (1999-2018, offline); yahoo: Yahoo Finance "
        "through yfinance (needs network). Default bundled.",
    )
    p.set_defaults(handler=cmd_archive_build)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole loop on the bundled history (about 17 s on 2 cores)",
        description="Start an embedded Kafka broker, replay the bundled S&P 500, NASDAQ and VIX "
        "history through it, run the daemon on it, build the rare-event archive, retrain once, "
        "print the per-regime validation table and the promotion decision, write the HTML "
        "report, then keep serving /metrics until Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the store, models and reports go (default: a temporary directory, removed "
        "at the end)",
    )
    p.add_argument(
        "--store-url",
        metavar="URL",
        help="keep the demo's store in this PostgreSQL database (postgresql://user@host:port/db; "
        "password from store.password or PGPASSWORD) instead of the state directory; an empty "
        "database, or one an earlier demo used (store.url of the configuration is not used)",
    )
    p.add_argument(
        "--exit-after-retrain",
        action="store_true",
        help="end after the validation table instead of serving /metrics",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="port of /metrics (default metrics.port, 9108; 0 picks a free one)",
    )
    p.add_argument(
        "--target",
        choices=["direction", "volatility", "drawdown"],
        help="the label the demo trains for (default label.target; docs/training.md, Targets)",
    )
    p.set_defaults(handler=cmd_demo)

    cli_training.register(sub, common)
    cli_evaluate.register(sub, common)
    cli_backtest.register(sub, common)
    cli_models.register(sub, common)
    cli_predictions.register(sub, common)
    cli_stores.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `regimed` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # The clients' connection chatter at INFO buries regimed's own lines.
        for noisy in ("kafka", "apscheduler"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except (ConfigError, DataError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RegimedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
