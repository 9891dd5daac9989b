"""The rare-event archive: samples of past crises, so retrained models do not forget them.

`regimed archive build` turns the daily history of `archive.symbols` into samples with source
"archive", one per symbol and trading day inside the window of an `[archive]` event. They come
from the batch path the live daemon is checked against (`daemon.pipeline.engine.history_rows`), run
over each symbol's whole history once: the bars before an event warm up its moving windows,
EMAs and crash episodes as a live stream would, and only the days inside the window are kept.
Each sample keeps its rule-based regime; its `event` column names the event, whose label
(crash, high_volatility, ...) the report and the configuration give.

Budget: `archive.budget` samples are shared out by the events' shares, by largest remainder.
The shares of events the source has no data for at all (2020-2023 in the bundled history) are
spread over the other events in proportion to theirs; otherwise a share is a cap, so an event
with fewer samples keeps what it has and a long mild event (2022) cannot fill the room a short
crash leaves. An event over its quota is thinned by stratified sampling: its samples in time
order are cut into `quota` equal runs and one is drawn from each (seeded by `archive.seed` and
the event name), so onset, trough and rebound all stay represented. Budget 0 keeps everything.

Samples whose label is unknown (the future bar is past the end of the data) are left out: no
live bar will ever label an archive sample. Bars are not stored: the bars table is the live
stream's, and the daemon rebuilds its state from it.

Rebuilding is idempotent: the same configuration and data select the same samples, and
`Store.write_batch` leaves identical rows unchanged, all in one transaction.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import itertools
import math
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from daemon.config import ArchiveEvent, Config
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.data.sources import BUNDLED_SYMBOLS, yahoo_events
from daemon.domain import REGIMES, Bar, SampleRow
from daemon.errors import ArchiveError, ConfigError, ReplayError
from daemon.pipeline.engine import history_rows
from daemon.store.sqlite import BatchResult, Store
from daemon.store.targets import set_target

__all__ = [
    "ArchiveError",
    "ArchiveReport",
    "ArchiveSource",
    "Candidates",
    "EventReport",
    "Histories",
    "build_archive",
    "candidates",
    "choose",
    "load_bundled",
    "load_yahoo",
    "quotas",
    "render",
    "select",
    "stratified",
]

ArchiveSource = Literal["bundled", "yahoo"]
ARCHIVE_SOURCES: tuple[ArchiveSource, ...] = ("bundled", "yahoo")

#: The VIX as Yahoo Finance names it (fetched alongside the archive's symbols).
YAHOO_VIX = "^VIX"
#: Calendar days fetched from Yahoo before the earliest event: the 199-bar warm-up plus about
#: 300 bars for the EMAs to forget their seed (to ~1e-10), and earlier crash episodes.
LEAD_DAYS = 730
#: Calendar days fetched after the latest event, so its last days get their label.
TAIL_DAYS = 30


@dataclass(frozen=True)
class Histories:
    """Daily bars per symbol (OHLCV by day), VIX closes, and what they came from."""

    bars: dict[str, pd.DataFrame]
    vix: pd.Series | None
    where: str

    def coverage(self) -> dict[str, tuple[dt.date, dt.date]]:
        """First and last day of each symbol's bars."""
        return {
            symbol: (frame.index[0].date(), frame.index[-1].date())
            for symbol, frame in self.bars.items()
        }


@dataclass(frozen=True)
class EventReport:
    """What one event contributed: its quota, the labelled samples inside its window, and the
    ones kept (all of them, or a stratified subsample when over the quota)."""

    event: ArchiveEvent
    quota: int | None  # None: budget 0, every sample is kept
    available: int
    unlabelled: int
    samples: tuple[SampleRow, ...]

    @property
    def kept(self) -> int:
        return len(self.samples)

    @property
    def no_data(self) -> bool:
        """True when the source has no bar inside the event's window."""
        return self.available == 0 and self.unlabelled == 0

    def regimes(self) -> dict[str, int]:
        """Kept samples per rule-based regime, in `REGIMES` order, regimes with none left out."""
        counts = Counter(s.regime for s in self.samples)
        return {r: counts[r] for r in REGIMES if counts[r]}


@dataclass(frozen=True)
class ArchiveReport:
    """The outcome of one build."""

    source: ArchiveSource
    where: str
    coverage: dict[str, tuple[dt.date, dt.date]]
    budget: int
    events: tuple[EventReport, ...]
    result: BatchResult
    stale: int  # archive samples kept from an earlier build: events this one did not rebuild
    seconds: float

    @property
    def total(self) -> int:
        return sum(e.kept for e in self.events)

    def labels(self) -> dict[str, str]:
        """Event name -> the regime the event stands for (its label in the configuration)."""
        return {e.event.name: e.event.label for e in self.events}


# -- arithmetic ------------------------------------------------------------------------------


def quotas(budget: int, shares: Sequence[float], has_data: Sequence[bool]) -> list[int]:
    """Split `budget` samples over events by their shares, renormalised over the events that
    have data (the others get 0), rounding by largest remainder so the quotas sum to `budget`
    (ties go to the earlier event)."""
    weights = [s if ok else 0.0 for s, ok in zip(shares, has_data, strict=True)]
    total = sum(weights)
    if budget <= 0 or total <= 0:
        return [0] * len(weights)
    exact = [budget * w / total for w in weights]
    result = [math.floor(x) for x in exact]
    candidates = sorted(
        (i for i, w in enumerate(weights) if w > 0), key=lambda i: (result[i] - exact[i], i)
    )
    for i in candidates[: budget - sum(result)]:
        result[i] += 1
    return result


def stratified(samples: Sequence[SampleRow], k: int, seed: int, name: str) -> list[SampleRow]:
    """`k` of `samples` (taken in (ts, symbol) order): one drawn at random from each of `k`
    equal runs, so the subsample spans the whole event. Deterministic in `seed` and `name`."""
    ordered = sorted(samples, key=lambda s: (s.ts, s.symbol))
    n = len(ordered)
    if k >= n:
        return ordered
    if k <= 0:
        return []
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    edges = [i * n // k for i in range(k + 1)]
    return [ordered[lo + int(rng.integers(hi - lo))] for lo, hi in itertools.pairwise(edges)]


# -- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    """Every labelled sample inside one event's window (all symbols), before the budget."""

    event: ArchiveEvent
    samples: tuple[SampleRow, ...]
    unlabelled: int  # days inside the window whose label is past the end of the data


def candidates(config: Config, histories: Histories) -> list[Candidates]:
    """The candidate samples of every event of `config.archive`: each symbol's whole history
    goes through `history_rows` once, then the samples inside each window are taken."""
    events = config.archive.events
    inside: list[list[SampleRow]] = [[] for _ in events]
    unlabelled = [0] * len(events)
    for symbol, bars in histories.bars.items():
        _, rows = history_rows(config, symbol, bars, histories.vix, source="archive")
        days = [r.ts for r in rows]
        for i, event in enumerate(events):
            lo = bisect.bisect_left(days, event.start.isoformat())
            hi = bisect.bisect_right(days, event.end.isoformat())
            for row in rows[lo:hi]:
                if row.label is None:
                    unlabelled[i] += 1
                else:
                    inside[i].append(dataclasses.replace(row, event=event.name))
    return [
        Candidates(event, tuple(pool), missing)
        for event, pool, missing in zip(events, inside, unlabelled, strict=True)
    ]


def choose(budget: int, seed: int, pools: Sequence[Candidates]) -> list[EventReport]:
    """Apply the budget: each event's quota (`quotas`), thinned by `stratified` when over it;
    budget 0 keeps every candidate."""
    if budget == 0:
        limits: list[int | None] = [None] * len(pools)
    else:
        shares = [p.event.share for p in pools]
        limits = list(quotas(budget, shares, [bool(p.samples) for p in pools]))
    return [
        EventReport(
            event=p.event,
            quota=limit,
            available=len(p.samples),
            unlabelled=p.unlabelled,
            samples=tuple(
                stratified(
                    p.samples, len(p.samples) if limit is None else limit, seed, p.event.name
                )
            ),
        )
        for p, limit in zip(pools, limits, strict=True)
    ]


def select(config: Config, histories: Histories) -> list[EventReport]:
    """The archive samples of every event of `config.archive` from `histories`."""
    archive = config.archive
    return choose(archive.budget, archive.seed, candidates(config, histories))


def build_archive(config: Config, store: Store, source: ArchiveSource) -> ArchiveReport:
    """Build the archive from `source` and write it to `store` in one transaction."""
    started = time.perf_counter()
    histories = load_bundled(config) if source == "bundled" else load_yahoo(config)
    events = select(config, histories)
    samples = [s for e in events for s in e.samples]
    # An event this source has bars for is rebuilt whole: its samples that the new selection
    # drops (a smaller budget or share, another seed or window) leave the store. An event it
    # has no bars for (2020-2023 offline) keeps what an earlier build stored.
    rebuilt = [e.event.name for e in events if e.available]
    set_target(store, "archive", config.label)  # the samples record the target they are for
    result = store.write_batch(samples=samples, replace_events=rebuilt)
    stored = sum(store.sample_counts()["archive"].values())
    return ArchiveReport(
        source=source,
        where=histories.where,
        coverage=histories.coverage(),
        budget=config.archive.budget,
        events=tuple(events),
        result=result,
        stale=stored - len(samples),
        seconds=time.perf_counter() - started,
    )


# -- sources ---------------------------------------------------------------------------------


def load_bundled(config: Config) -> Histories:
    """The bundled history (1999-2018 bars, 2014-2018 VIX) of `archive.symbols`."""
    files = {symbol: name for name, symbol in BUNDLED_SYMBOLS.items()}
    bars: dict[str, pd.DataFrame] = {}
    for i, symbol in enumerate(config.archive.symbols):
        if symbol not in files:
            raise ConfigError(
                f'archive.symbols[{i}] = "{symbol}": not in the bundled history (it has '
                f"{', '.join(sorted(files))}); build with --source yahoo or change archive.symbols"
            )
        bars[symbol] = read_bars_csv(bundled_path(files[symbol]))
    return Histories(bars, read_vix_csv(bundled_path("vix")), "the bundled history")


def load_yahoo(config: Config, today: dt.date | None = None) -> Histories:
    """`archive.symbols` and the VIX from Yahoo Finance (needs network), from `LEAD_DAYS`
    before the earliest event to `TAIL_DAYS` after the latest."""
    events = config.archive.events
    today = today or dt.date.today()
    start = min(e.start for e in events) - dt.timedelta(days=LEAD_DAYS)
    end = min(max(e.end for e in events) + dt.timedelta(days=TAIL_DAYS), today)
    symbols = list(config.archive.symbols)
    tickers = symbols if YAHOO_VIX in symbols else [*symbols, YAHOO_VIX]
    try:
        fetched = yahoo_events(tickers, start.isoformat(), end.isoformat(), YAHOO_VIX)
    except ReplayError as exc:
        raise ArchiveError(f"archive build --source yahoo: {exc}") from exc
    frames = _frames(fetched)
    vix = frames[YAHOO_VIX]["close"].rename("vix") if YAHOO_VIX in frames else None
    return Histories({s: frames[s] for s in symbols if s in frames}, vix, "Yahoo Finance")


def _frames(events: Iterable[Bar]) -> dict[str, pd.DataFrame]:
    """Bar events (in time order) back into one OHLCV frame per symbol, indexed by day."""
    columns = ("open", "high", "low", "close", "volume")
    grouped: dict[str, list[Bar]] = {}
    for e in events:
        grouped.setdefault(e.symbol, []).append(e)
    return {
        symbol: pd.DataFrame(
            {c: np.array([getattr(e, c) for e in rows], dtype=np.float64) for c in columns},
            index=pd.DatetimeIndex(pd.to_datetime([e.day for e in rows]), name="date"),
        )
        for symbol, rows in grouped.items()
    }


# -- report ----------------------------------------------------------------------------------


def render(report: ArchiveReport) -> str:
    """The build as a table: one line per event, then the total and what the store did."""
    spans = ", ".join(f"{s} {a}..{b}" for s, (a, b) in report.coverage.items())
    budget = "every sample" if report.budget == 0 else f"budget {report.budget}"
    lines = [f"rare-event archive from {report.where} ({spans}), {budget}", ""]
    header = ("event", "window", "label", "share", "quota", "in window", "kept", "regimes kept")
    rows: list[tuple[str, ...]] = [header]
    absent = "no data offline" if report.source == "bundled" else "no data from Yahoo Finance"
    first = min((a for a, _ in report.coverage.values()), default=None)
    last = max((b for _, b in report.coverage.values()), default=None)
    for e in report.events:
        ev = e.event
        if e.no_data:
            note = absent
            if last is not None and ev.start > last:
                note += f" (data ends {last})"
            elif first is not None and ev.end < first:
                note += f" (data starts {first})"
        else:
            note = ", ".join(f"{r} {n}" for r, n in e.regimes().items())
            if e.unlabelled:
                note += f"; {e.unlabelled} left out: no label yet"
        rows.append(
            (
                ev.name,
                f"{ev.start}..{ev.end}",
                ev.label,
                f"{ev.share:.0%}",
                "all" if e.quota is None else str(e.quota),
                str(e.available),
                str(e.kept),
                note,
            )
        )
    quota = sum(e.quota or 0 for e in report.events)
    total = (
        "total",
        "",
        "",
        "",
        "all" if report.budget == 0 else str(quota),
        str(sum(e.available for e in report.events)),
        str(report.total),
        "",
    )
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    numeric = {3, 4, 5, 6}
    for row in rows:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    missing = [e.event.name for e in report.events if e.no_data]
    if missing:
        lines.append("")
        lines.append(f"{absent}: {', '.join(missing)}")
    r = report.result
    lines.append("")
    lines.append(
        f"stored {report.total} archive samples: {r.samples_inserted} new, "
        f"{r.samples_replaced} replaced, {r.samples_unchanged} unchanged "
        f"({report.seconds:.1f} s)"
    )
    if r.samples_removed:
        lines.append(
            f"removed {r.samples_removed} archive samples of an earlier build that this one "
            "no longer selects"
        )
    if report.stale:
        lines.append(
            f"note: {report.stale} archive samples of events this source has no data for "
            "(or no longer configured) stay in the store from an earlier build"
        )
    return "\n".join(lines) + "\n"
