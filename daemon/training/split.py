"""Split stored samples into a training and a validation part without look-ahead leakage.

A label at bar t looks `label.horizon_bars` (H) bars ahead, so a training row close to the
validation period has a label that *is* validation-period data. Validation is the most recent
`training.validation_fraction` of live samples; training rows whose horizon reaches it are purged
and H more bars are embargoed, so that serial correlation of features does not leak either.

Time is counted in bars of the live calendar (the sorted distinct days of the live samples). With
the cutoff at calendar index c, the last day a row may train on is index c - 2H - 1 (`train_end`):
its label ends at c - H - 1, H bars clear of the validation period. Where a bar count has to
reach beyond the live calendar (archive days before the live window), weekdays stand in for
trading days: a holiday makes such a gap one day shorter in trading days, which the H-bar
embargo absorbs.

The limit applies to archive rows too: an archive row dated after `train_end` never trains, and
an archive event that does not lie entirely before `train_end` can neither be held out nor train
past the limit -- its rows up to `train_end` train, the rest are dropped (counted in `purged`).

Rare regimes: when a regime has fewer than `training.min_validation_samples` live validation rows,
whole archive events labelled with that regime (crash, recovery, ...) are held out as validation,
most recent first, until the regime has enough rows; an event is never split. Holding out an event
also purges training rows within 2H bars of it on either side, live ones included: the live
history may cover the same dates (the demo replays the bundled history the archive is cut from),
and a training row on the event's days would be the very row being validated.

Balanced sampling and regime weights come after this split, on the training part only.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from daemon.config import ArchiveEvent, LabelConfig
from daemon.config.training import TrainingConfig
from daemon.domain import REGIMES
from daemon.errors import TrainingDataError

__all__ = ["Split", "split_samples"]

Days = npt.NDArray[np.datetime64]
Index = npt.NDArray[np.intp]

#: The order in which short regimes get held-out events: the rare, costly regimes first, since
#: an event held out for one regime also adds rows of the others it carries.
_PRIORITY: tuple[str, ...] = (
    "crash",
    "recovery",
    *(r for r in REGIMES if r not in ("crash", "recovery")),
)


@dataclass(frozen=True)
class Split:
    """Integer positions into the sample meta frame, and what the split did.

    `validation` holds the live validation rows and every row of each held-out archive event;
    `cutoff` is the first validation day, `train_end` the last day a training row may have;
    `purged` counts rows (live and archive) in neither part; `per_regime_sizes` gives the
    validation rows of each regime in `REGIMES`.
    """

    train: Index
    validation: Index
    cutoff: dt.date
    train_end: dt.date
    held_out_events: tuple[str, ...]
    purged: int
    per_regime_sizes: Mapping[str, int]


def split_samples(
    meta: pd.DataFrame,
    training: TrainingConfig,
    label: LabelConfig,
    events: Sequence[ArchiveEvent],
) -> Split:
    """Split `meta` (as `Store.read_samples` returns it) by time, purging and embargoing around
    every validation period, and holding out archive events for regimes short of validation
    rows. Raises TrainingDataError when there is no live sample or nothing left to train on.

    Archive rows whose event is not in `events` (the configuration changed since the archive
    was built) have no known event label: they train, under the same time limit, and are never
    held out.
    """
    h = label.horizon_bars
    ts = meta["ts"].to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    live = (meta["source"].astype(object) == "live").to_numpy(dtype=bool)
    if not live.any():
        raise TrainingDataError(
            f"no live samples among the {len(meta)} stored samples: validation is drawn from "
            "live samples, so a retrain needs the daemon to have labelled some live bars first"
        )
    calendar = np.unique(ts[live])
    cut = _cutoff_index(ts[live], calendar, training.validation_fraction)
    cutoff = calendar[cut]
    extended = _extended_calendar(calendar, ts, 2 * h + 2)
    end_pos = int(np.searchsorted(extended, cutoff)) - 2 * h - 1
    train_end = extended[end_pos]

    regimes = meta["regime"].astype(object).to_numpy()
    event_names = meta["event"].astype(object).to_numpy()
    validation = live & (ts >= cutoff)
    trainable = ts <= train_end
    held = _hold_out(
        events, regimes, event_names, ts, trainable, validation, training.min_validation_samples
    )
    for name in held:
        rows = event_names == name
        validation |= rows
        lo, hi = ts[rows].min(), ts[rows].max()
        start = int(np.searchsorted(extended, lo, side="left")) - 2 * h
        stop = int(np.searchsorted(extended, hi, side="right")) - 1 + 2 * h
        trainable &= ~((ts >= extended[start]) & (ts <= extended[stop]))
    train = trainable & ~validation
    if not train.any():
        raise TrainingDataError(_empty_training_message(meta, calendar, cutoff, train_end, h))
    counts = Counter(regimes[validation])
    return Split(
        train=np.flatnonzero(train),
        validation=np.flatnonzero(validation),
        cutoff=_date(cutoff),
        train_end=_date(train_end),
        held_out_events=tuple(held),
        purged=int(len(meta) - train.sum() - validation.sum()),
        per_regime_sizes={r: int(counts.get(r, 0)) for r in REGIMES},
    )


def _cutoff_index(live_ts: Days, calendar: Days, fraction: float) -> int:
    """Calendar index of the first validation day: the day boundary whose validation row count
    is nearest `fraction` of the live rows (ties: the larger validation part), never leaving
    validation empty."""
    per_day = np.bincount(np.searchsorted(calendar, live_ts), minlength=len(calendar))
    # rows_from[i]: live rows on calendar day i or later.
    rows_from = np.cumsum(per_day[::-1])[::-1]
    target = fraction * len(live_ts)
    miss = np.abs(rows_from - target)
    # The latest index among the nearest ones would give the smaller part on a tie; take the
    # earliest, whose part is the larger.
    return int(np.flatnonzero(miss == miss.min())[0])


def _extended_calendar(calendar: Days, ts: Days, pad: int) -> Days:
    """The live calendar with weekdays added before and after it, far enough to count `pad`
    bars beyond any sample day."""
    margin = np.timedelta64(2 * pad + 7, "D")
    first = min(calendar[0], ts.min()) - margin
    last = max(calendar[-1], ts.max()) + margin
    before = np.arange(first, calendar[0], dtype="datetime64[D]")
    after = np.arange(calendar[-1] + np.timedelta64(1, "D"), last, dtype="datetime64[D]")
    return np.concatenate(
        [before[np.is_busday(before)], calendar, after[np.is_busday(after)]]
    ).astype("datetime64[D]")


def _hold_out(
    events: Sequence[ArchiveEvent],
    regimes: npt.NDArray[np.object_],
    event_names: npt.NDArray[np.object_],
    ts: Days,
    trainable: npt.NDArray[np.bool_],
    validation: npt.NDArray[np.bool_],
    minimum: int,
) -> list[str]:
    """Names of the archive events to hold out, for each regime short of `minimum` validation
    rows: events labelled with that regime lying entirely before the training limit, most
    recent first, until the regime has enough rows. When two or more events of that label
    could train, at least one stays in training."""
    counts = Counter(regimes[validation])
    present = [e for e in events if (event_names == e.name).any()]
    present.sort(key=lambda e: ts[event_names == e.name].max(), reverse=True)
    held: list[str] = []
    for regime in _PRIORITY:
        if counts[regime] >= minimum:
            continue
        own = [e for e in present if e.label == regime]
        # Events of this label that contribute training rows now.
        training = {e.name for e in own if (trainable & (event_names == e.name)).any()}
        keep_one = len(training) >= 2
        for event in own:
            if counts[regime] >= minimum:
                break
            rows = event_names == event.name
            if event.name in held or not trainable[rows].all():
                continue
            if keep_one and not training - {event.name}:
                continue
            held.append(event.name)
            training.discard(event.name)
            counts.update(regimes[rows])
    return held


def _empty_training_message(
    meta: pd.DataFrame, calendar: Days, cutoff: np.datetime64, train_end: np.datetime64, h: int
) -> str:
    archive = int((meta["source"].astype(object) == "archive").sum())
    return (
        f"no training rows: the live samples span {len(calendar)} trading days "
        f"({calendar[0]}..{calendar[-1]}), validation starts {cutoff}, and the purge and "
        f"embargo (2 x label.horizon_bars = {2 * h} bars) leave no live or archive sample "
        f"({archive} archive samples) that may train, i.e. dated on or before {train_end} and "
        "clear of held-out events; more live history is needed"
    )


def _date(day: np.datetime64) -> dt.date:
    return pd.Timestamp(day).date()
