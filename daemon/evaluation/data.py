"""The evaluation's data: every labelled sample of the history once, the walk-forward folds,
and the rare-event archive as it was known at each fold's cutoff.

Features are computed once per symbol over the whole history by the batch path the live
daemon is checked against (`daemon.pipeline.engine.history_rows`): a feature row at day t uses
bars up to t only, its label looks `label.horizon_bars` bars ahead. What a fold may see is
decided by the label day (the day the label's future close is known), never by the feature day.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import Config
from daemon.config.evaluate import STEP_MONTHS, EvaluateConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.data.sources import BUNDLED_SYMBOLS
from daemon.domain import SampleRow
from daemon.errors import UsageError
from daemon.pipeline.engine import history_rows
from daemon.training.archive import Candidates, Histories, choose

__all__ = [
    "Dataset",
    "Fold",
    "build_dataset",
    "fold_at",
    "folds",
    "load_csvs",
    "load_default",
    "symbol_of",
]

Index = npt.NDArray[np.int64]
Days = npt.NDArray[np.datetime64]


def load_default() -> Histories:
    """The bundled S&P 500 and NASDAQ daily bars (1999-2018) and the VIX (2014-2018)."""
    bars = {symbol: read_bars_csv(bundled_path(name)) for name, symbol in BUNDLED_SYMBOLS.items()}
    return Histories(bars, read_vix_csv(bundled_path("vix")), "the bundled history")


def symbol_of(path: str | Path) -> str:
    """The symbol a CSV stands for: its file name without .csv / .gz (`SPY.csv.gz` -> SPY)."""
    name = Path(path).name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def load_csvs(bars: Sequence[str | Path], vix: str | Path | None) -> Histories:
    """User histories: one yfinance-style CSV per symbol (symbol from the file name), an
    optional VIX CSV (without it, every regime uses the volatility proxy)."""
    frames: dict[str, pd.DataFrame] = {}
    for path in bars:
        symbol = symbol_of(path)
        if symbol in frames:
            raise UsageError(f"--bars {path}: a second file for symbol {symbol!r}")
        frames[symbol] = read_bars_csv(path)
    series = None if vix is None else read_vix_csv(vix)
    return Histories(frames, series, ", ".join(str(p) for p in bars))


@dataclass(frozen=True)
class Dataset:
    """Every labelled sample, one row per symbol and day, in (day, symbol) order.

    `label_days` is the day of the bar whose close decides the label (t + horizon bars of
    the row's symbol). `events` are the archive's candidates per configured event (all
    symbols, before the budget) with `event_known`, the last label day of each event's rows.
    """

    symbols: npt.NDArray[np.str_]
    days: Days
    label_days: Days
    regimes: npt.NDArray[np.str_]
    y: npt.NDArray[np.int8]
    X: npt.NDArray[np.float32]
    events: tuple[Candidates, ...]
    event_known: tuple[np.datetime64 | None, ...]
    position: Mapping[tuple[str, str], int] = field(repr=False)
    where: str = ""

    def __len__(self) -> int:
        return len(self.y)


def build_dataset(config: Config, histories: Histories) -> Dataset:
    """Run each symbol's history through `history_rows` once and keep the labelled samples,
    with their label day and the archive candidates of `config.archive.events`."""
    h = config.label.horizon_bars
    kept: list[tuple[SampleRow, np.datetime64]] = []
    for symbol, bars in histories.bars.items():
        _, rows = history_rows(config, symbol, bars, histories.vix)
        calendar = pd.DatetimeIndex(bars.index).to_numpy(dtype="datetime64[D]")
        where = {str(day): i for i, day in enumerate(calendar)}
        for row in rows:
            if row.label is None:
                continue
            i = where[row.ts] + h
            kept.append((row, calendar[i]))
    if not kept:
        raise UsageError(f"{histories.where}: no labelled sample (the history is too short)")
    kept.sort(key=lambda pair: (pair[0].ts, pair[0].symbol))
    samples = [row for row, _ in kept]
    position = {(row.symbol, row.ts): i for i, row in enumerate(samples)}
    days = np.array([row.ts for row in samples], dtype="datetime64[D]")
    pools: list[Candidates] = []
    known: list[np.datetime64 | None] = []
    label_days = np.array([day for _, day in kept], dtype="datetime64[D]")
    ts = [row.ts for row in samples]
    for event in config.archive.events:
        lo = bisect.bisect_left(ts, event.start.isoformat())
        hi = bisect.bisect_right(ts, event.end.isoformat())
        pool = tuple(
            dataclasses.replace(row, source="archive", event=event.name) for row in samples[lo:hi]
        )
        pools.append(Candidates(event, pool, 0))
        known.append(label_days[lo:hi].max() if hi > lo else None)
    return Dataset(
        symbols=np.array([row.symbol for row in samples], dtype=np.str_),
        days=days,
        label_days=label_days,
        regimes=np.array([row.regime for row in samples], dtype=np.str_),
        y=np.array([row.label for row in samples], dtype=np.int8),
        X=np.stack([np.asarray(row.features, dtype=np.float32) for row in samples]),
        events=tuple(pools),
        event_known=tuple(known),
        position=position,
        where=histories.where,
    )


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: train on `train` (live rows whose label day is before
    `cutoff`) plus `archive` (archive rows of the events known before `cutoff`, so also live
    training rows: the archive duplicates them, as in production), test on `test` (rows with
    cutoff <= day < end)."""

    cutoff: dt.date
    end: dt.date
    train: Index
    archive: Index
    test: Index
    events: tuple[str, ...]


def folds(
    data: Dataset, config: Config, settings: EvaluateConfig, end: dt.date | None = None
) -> list[Fold]:
    """The folds from `settings.start` every `settings.step` up to `end` (default: the last
    labelled day), skipping steps without a test row."""
    last = data.days.max().astype(dt.date) + dt.timedelta(days=1)
    stop = min(end, last) if end is not None else last
    months = STEP_MONTHS[settings.step]
    start = pd.Timestamp(settings.start)
    archive_cache: dict[tuple[int, ...], Index] = {}
    out: list[Fold] = []
    k = 0
    while True:
        cutoff = (start + pd.DateOffset(months=k * months)).date()
        if cutoff >= stop:
            break
        k += 1
        upper = min((start + pd.DateOffset(months=k * months)).date(), stop)
        fold = fold_at(data, config, cutoff, upper, archive_cache)
        if len(fold.test):
            out.append(fold)
    return out


def fold_at(
    data: Dataset,
    config: Config,
    cutoff: dt.date,
    end: dt.date,
    cache: dict[tuple[int, ...], Index] | None = None,
) -> Fold:
    """What a retrain at `cutoff` knows (the rows whose label day is before it, the archive of
    the events known by then) and the rows of `cutoff <= day < end` it goes on to predict.
    `cache` keeps the archive of each set of known events between calls."""
    c, u = np.datetime64(cutoff, "D"), np.datetime64(end, "D")
    test = np.flatnonzero((data.days >= c) & (data.days < u))
    train = np.flatnonzero(data.label_days < c)
    eligible = tuple(
        i
        for i, (pool, known) in enumerate(zip(data.events, data.event_known, strict=True))
        if pool.samples and known is not None and known < c
    )
    names = tuple(data.events[i].event.name for i in eligible)
    cache = {} if cache is None else cache
    if eligible not in cache:
        cache[eligible] = _archive_rows(data, config, eligible)
    return Fold(cutoff, end, train, cache[eligible], test, names)


def _archive_rows(data: Dataset, config: Config, eligible: Sequence[int]) -> Index:
    """The archive `regimed archive build` would select from these events alone: the budget
    shared over them by `daemon.training.archive.choose` (largest remainder, stratified
    thinning)."""
    if not eligible:
        return np.empty(0, dtype=np.int64)
    pools = [data.events[i] for i in eligible]
    reports = choose(config.archive.budget, config.archive.seed, pools)
    rows = [data.position[(s.symbol, s.ts)] for r in reports for s in r.samples]
    return np.sort(np.array(rows, dtype=np.int64))
