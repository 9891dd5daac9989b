"""The `regimed` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (the message names the
key, file or argument). systemd's `RestartPreventExitStatus=2` relies on that split.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon import __version__
from daemon.config import Config, load_config
from daemon.errors import ConfigError, DataError, RegimedError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

logger = logging.getLogger("regimed")

Handler = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> Config:
    config, source = load_config(args.config)
    logger.debug("configuration from %s", source or "built-in defaults")
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the effective configuration, secrets masked; exit 2 on any bad value."""
    path = args.path if args.path is not None else args.config
    config, source = load_config(path)
    overrides = sorted(k for k in os.environ if k.startswith("REGIMED_") and k != "REGIMED_CONFIG")
    print(f"# effective configuration from {source or 'built-in defaults'}")
    if overrides:
        print(f"# environment overrides: {', '.join(overrides)}")
    print(config.to_toml(), end="")
    return EXIT_OK


def cmd_regimes(args: argparse.Namespace) -> int:
    """Label a daily price history offline and summarise days per regime."""
    from daemon.offline import label_csv, summary, write_labels

    config = _config(args)
    frame = label_csv(config.regime, args.bars, args.vix)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8", newline="") as handle:
            write_labels(frame, handle)
        sys.stdout.write(summary(frame, str(args.bars)))
        sys.stdout.write(f"\n  labels written to {args.out}\n")
    else:
        write_labels(frame, sys.stdout)
        sys.stdout.flush()
        sys.stderr.write("\n" + summary(frame, str(args.bars)))
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the exit-code path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="configuration file (default: $REGIMED_CONFIG, ./config.toml, "
        "/etc/regimed/config.toml, else built-in defaults)",
    )
    common.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default INFO)",
    )
    parser = _Parser(
        prog="regimed",
        description="Label market regimes as bars arrive and keep models that remember crashes.",
        parents=[common],
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
        "overrides) with secrets masked. Exits 2 and names the key on any bad value.",
    )
    p.add_argument("path", nargs="?", default=None, help="file to check (default: --config)")
    p.set_defaults(handler=cmd_check_config)
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
