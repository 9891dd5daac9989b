"""Simulate the gate over the bundled history: how often does it promote noise?

Retrains every `--every-weeks` weeks from `--start` to `--end` over the bundled S&P 500 and
NASDAQ history (`daemon.evaluation.simulation`): each sees the rows a daemon would have stored
by its cutoff, runs the trainer's split, sampling, weights, models and vote, and goes through
the gate against the naive references and its track's champion. A second track trains on
shuffled labels; every promotion there is noise promoted. For promotions that replaced a
champion, candidate minus champion on the gate metric over the next `--horizon-weeks` weeks.

Run: .venv/bin/python benchmarks/gate.py [--start 2004-01-01] [--end 2019-01-01]
     [--every-weeks 8] [--horizon-weeks 13] [--models lightgbm,logistic_regression]
     [--bootstrap 1000] [--n-jobs 1] [--json OUT]
Figures: docs/training.md, "Does the gate promote noise?".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time

from daemon.config import Config
from daemon.evaluation.simulation import TRACKS, SimulationSettings, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2004, 1, 1))
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2019, 1, 1))
    parser.add_argument("--every-weeks", type=int, default=8)
    parser.add_argument("--horizon-weeks", type=int, default=13)
    parser.add_argument("--models", default="lightgbm,logistic_regression")
    parser.add_argument("--bootstrap", type=int, default=None, help="gate.bootstrap_samples")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every retrain as JSON here")
    args = parser.parse_args(argv)

    config = Config()
    if args.bootstrap is not None:
        config = config.replace(
            gate=dataclasses.replace(config.gate, bootstrap_samples=args.bootstrap)
        )
    settings = SimulationSettings(
        start=args.start,
        end=args.end,
        every_weeks=args.every_weeks,
        horizon_weeks=args.horizon_weeks,
        models=tuple(m for m in args.models.split(",") if m),
        n_jobs=args.n_jobs,
    )
    t0 = time.perf_counter()

    def progress(k: int, total: int, cutoff: dt.date) -> None:
        print(
            f"\r{k + 1}/{total} {cutoff} {time.perf_counter() - t0:6.0f} s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    result = simulate(config, settings, progress=progress)
    print(file=sys.stderr)
    summary = result.summary()
    print(
        f"retrains every {settings.every_weeks} weeks, {settings.start}..{settings.end}, "
        f"models {', '.join(settings.models)}, {result.seconds:.0f} s"
    )
    print(
        f"{'track':<10} {'retrains':>8} {'promoted':>8} {'share':>7} {'replaced':>8} "
        f"{'next ' + str(settings.horizon_weeks) + 'w':>9}  rules"
    )
    for track in TRACKS:
        s = summary[track]
        mean = s["next_mean_difference"]
        print(
            f"{track:<10} {s['retrains']:>8} {s['promoted']:>8} "
            f"{(s['promoted_share'] or 0):>7.1%} {s['replaced_champion']:>8} "
            f"{'-' if mean is None else f'{mean:+.4f}':>9}  "
            + ", ".join(f"{k} {v}" for k, v in sorted(s["rules"].items()))
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "settings": result.settings,
                    "seconds": result.seconds,
                    "summary": summary,
                    "retrains": [r.as_dict() for r in result.retrains],
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
