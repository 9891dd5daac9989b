from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import ArchiveEvent, LabelConfig
from daemon.config.training import TrainingConfig
from daemon.domain import REGIMES
from daemon.errors import RegimedError, TrainingDataError
from daemon.training.split import split_samples

START = np.datetime64("2020-01-06", "D")  # a Monday

#: (symbol, source, regime, event, day)
Row = tuple[str, str, str, str | None, np.datetime64]


def make_meta(rows: Sequence[Row]) -> pd.DataFrame:
    """A meta frame with the dtypes `Store.read_samples` gives, from
    (symbol, source, regime, event, day) rows."""
    symbol, source, regime, event, ts = zip(*rows, strict=True) if rows else ([],) * 5
    frame = pd.DataFrame(
        {
            "symbol": pd.Categorical(symbol),
            "source": pd.Categorical(source, categories=["live", "archive"]),
            "regime": pd.Categorical(regime, categories=list(REGIMES)),
            "event": pd.Categorical(event),
            "ts": pd.to_datetime(np.array(ts, dtype="datetime64[D]")).astype("datetime64[ns]"),
            "weight": np.ones(len(rows)),
            "label": pd.array([1] * len(rows), dtype="Int8"),
        }
    )
    return frame


def weekdays(start: np.datetime64, n: int) -> np.ndarray:
    return np.busday_offset(start, np.arange(n), roll="forward")


def live_rows(days: Any, regime: str = "normal", symbols: Sequence[str] = ("SPY",)) -> list[Row]:
    return [(s, "live", regime, None, d) for d in days for s in symbols]


def event_rows(name: str, days: Any, regime: str, symbols: Sequence[str] = ("^GSPC",)) -> list[Row]:
    return [(s, "archive", regime, name, d) for d in days for s in symbols]


def event(name: str, days: Any, label: Any) -> ArchiveEvent:
    first, last = pd.Timestamp(days[0]).date(), pd.Timestamp(days[-1]).date()
    return ArchiveEvent(name, first, last, label, 0.5)


def bars_between(calendar: np.ndarray, day: np.datetime64, cutoff: np.datetime64) -> int:
    """Bars strictly after `day` and before `cutoff`: live calendar days, and weekdays before
    the calendar starts."""
    on_calendar = int(((calendar > day) & (calendar < cutoff)).sum())
    before = 0
    if day < calendar[0]:
        before = int(np.busday_count(day + np.timedelta64(1, "D"), calendar[0]))
    return on_calendar + before


# --- the cutoff, the purge and the embargo -------------------------------------------------


def test_cutoff_purge_and_embargo_on_a_plain_calendar():
    days = weekdays(START, 100)
    meta = make_meta(live_rows(days))
    split = split_samples(meta, TrainingConfig(validation_fraction=0.2), LabelConfig(5), [])
    assert split.cutoff == pd.Timestamp(days[80]).date()
    assert split.train_end == pd.Timestamp(days[69]).date()
    assert list(split.validation) == list(range(80, 100))
    assert list(split.train) == list(range(70))
    # Days 75..79: their label reaches the validation period (purge); 70..74: embargo.
    assert split.purged == 10
    assert split.held_out_events == ()
    assert split.per_regime_sizes == {r: 20 if r == "normal" else 0 for r in REGIMES}


def test_a_day_never_straddles_the_cutoff():
    # 3 symbols a day: 20% of 300 rows is 60 rows = 20 days; one symbol missing on some days.
    days = weekdays(START, 100)
    rows = live_rows(days, symbols=("A", "B", "C"))
    rows = [r for r in rows if not (r[0] == "C" and r[4] in days[75:90])]
    meta = make_meta(rows)
    split = split_samples(meta, TrainingConfig(validation_fraction=0.2), LabelConfig(3), [])
    val_days = set(meta["ts"].iloc[split.validation])
    train_days = set(meta["ts"].iloc[split.train])
    assert max(train_days) < min(val_days)
    cutoff = pd.Timestamp(split.cutoff)
    assert val_days == {d for d in meta["ts"] if d >= cutoff}
    assert abs(len(split.validation) - 0.2 * len(meta)) <= 3


def test_archive_rows_after_the_training_limit_never_train():
    days = weekdays(START, 100)
    late = weekdays(days[60], 40)
    meta = make_meta(live_rows(days) + event_rows("late", late, "normal"))
    split = split_samples(meta, TrainingConfig(), LabelConfig(5), [])
    train = meta.iloc[split.train]
    assert (train["ts"] <= pd.Timestamp(split.train_end)).all()
    archive = meta["source"] == "archive"
    assert (meta["ts"][archive] <= pd.Timestamp(split.train_end)).sum() == (
        train["source"] == "archive"
    ).sum()
    # Archive rows never become validation on their own: only held-out events do.
    assert (meta["source"].iloc[split.validation] == "live").all()


@st.composite
def samples(draw):
    h = draw(st.integers(1, 10))
    fraction = draw(st.floats(0.05, 0.3))
    n_days = draw(st.integers(10 * (2 * h + 3), 10 * (2 * h + 3) + 100))
    gaps = draw(st.lists(st.integers(1, 4), min_size=n_days, max_size=n_days))
    calendar = START + np.cumsum(gaps).astype("timedelta64[D]")
    per_day = draw(st.lists(st.integers(1, 3), min_size=n_days, max_size=n_days))
    regimes = st.sampled_from(REGIMES)
    rows: list[Row] = []
    for day, k in zip(calendar, per_day, strict=True):
        rows += [(f"S{i}", "live", draw(regimes), None, day) for i in range(k)]
    # Archive events: non-overlapping runs of weekdays, before and inside the live window.
    events = []
    cursor = calendar[0] - np.timedelta64(draw(st.integers(0, 400)), "D")
    for i in range(draw(st.integers(0, 5))):
        length = draw(st.integers(1, 30))
        days = np.busday_offset(cursor, np.arange(length), roll="forward")
        label = draw(regimes)
        events.append(event(f"E{i}", days, label))
        rows += [("^GSPC", "archive", draw(regimes), f"E{i}", d) for d in days]
        cursor = days[-1] + np.timedelta64(draw(st.integers(1, 120)), "D")
    minimum = draw(st.integers(1, 60))
    return make_meta(rows), TrainingConfig(fraction, minimum), LabelConfig(h), events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples())
def test_no_training_label_reaches_a_validation_period(case):
    meta, training, label, events = case
    h = label.horizon_bars
    split = split_samples(meta, training, label, events)
    ts = meta["ts"].to_numpy().astype("datetime64[D]")
    live = (meta["source"] == "live").to_numpy()
    calendar = np.unique(ts[live])
    cutoff = np.datetime64(split.cutoff)
    train, val = set(split.train), set(split.validation)

    # A partition: every row trains, validates or is counted as purged.
    assert not train & val
    assert len(train) + len(val) + split.purged == len(meta)
    # Live validation is the whole tail of the live calendar.
    assert {i for i in val if live[i]} == set(np.flatnonzero(live & (ts >= cutoff)))
    # Each training row's label (h bars) and the embargo (h more) end before the cutoff.
    for i in train:
        assert bars_between(calendar, ts[i], cutoff) >= 2 * h
        assert ts[i] <= np.datetime64(split.train_end)

    events_of = meta["event"].astype(object).to_numpy()
    regimes = meta["regime"].astype(object).to_numpy()
    live_val_counts = pd.Series(regimes[live & (ts >= cutoff)]).value_counts()
    labels = {e.name: e.label for e in events}
    for e in events:
        rows = set(np.flatnonzero(events_of == e.name))
        # An event is never split between training and validation.
        assert not (rows & train and rows & val)
        if e.name in split.held_out_events:
            assert rows <= val
            # Held out only for a regime short of validation rows, and only when it lies
            # entirely before the training limit.
            assert live_val_counts.get(labels[e.name], 0) < training.min_validation_samples
            assert ts[list(rows)].max() <= np.datetime64(split.train_end)
            # No training row within 2h bars of a held-out event.
            first, last = ts[list(rows)].min(), ts[list(rows)].max()
            for i in train:
                if ts[i] < first:
                    assert bars_between(calendar, ts[i], first) >= 2 * h or ts[i] < calendar[0]
                assert not (first <= ts[i] <= last)
        else:
            assert not rows & val
    sizes = pd.Series(regimes[list(val)]).value_counts()
    assert split.per_regime_sizes == {r: int(sizes.get(r, 0)) for r in REGIMES}


# --- held-out archive events ----------------------------------------------------------------


def crash_case(
    live_crash_days: int, n_crash_events: int = 2, minimum: int = 20, hv: bool = False
) -> tuple[pd.DataFrame, TrainingConfig, list[ArchiveEvent]]:
    """200 live weekdays (normal, with `live_crash_days` crash days at the end), crash events
    of 10 weekdays on two symbols each, long before the live window, and optionally one
    high-volatility event."""
    days = weekdays(START, 200)
    rows = live_rows(days[: 200 - live_crash_days]) + live_rows(
        days[200 - live_crash_days :], "crash"
    )
    events = []
    for k in range(n_crash_events):
        edays = weekdays(np.datetime64("2008-01-07") + np.timedelta64(200 * k, "D"), 10)
        rows += event_rows(f"crash{k}", edays, "crash", symbols=("A", "B"))
        events.append(event(f"crash{k}", edays, "crash"))
    if hv:
        hv_days = weekdays(np.datetime64("2007-01-08"), 10)
        rows += event_rows("hv", hv_days, "high_volatility")
        events.append(event("hv", hv_days, "high_volatility"))
    return make_meta(rows), TrainingConfig(0.2, minimum), events


def test_no_event_is_held_out_when_its_regime_has_enough_validation_rows():
    meta, training, events = crash_case(30, minimum=20)
    split = split_samples(meta, training, LabelConfig(5), events)
    assert split.held_out_events == ()
    assert (meta["source"].iloc[split.validation] == "live").all()


def test_the_most_recent_event_is_held_out_for_a_short_regime_and_one_stays_in_training():
    meta, training, events = crash_case(5, n_crash_events=3, minimum=20)
    split = split_samples(meta, training, LabelConfig(5), events)
    # 5 live crash rows + 20 rows of the latest crash event reach 20: one event is enough.
    assert split.held_out_events == ("crash2",)
    assert split.per_regime_sizes["crash"] == 25
    events_of = meta["event"].astype(object)
    assert set(np.flatnonzero(events_of == "crash2")) <= set(split.validation)
    trained = set(events_of.iloc[split.train].dropna())
    assert trained == {"crash0", "crash1"}


def test_at_least_one_event_of_a_label_stays_in_training():
    meta, _, events = crash_case(0, n_crash_events=2, hv=True)
    split = split_samples(meta, TrainingConfig(0.2, 1000), LabelConfig(5), events)
    # Not enough rows anywhere: crash1 is held out, crash0 must stay; the single
    # high-volatility event may go.
    assert split.held_out_events == ("crash1", "hv")
    assert "crash0" in set(meta["event"].astype(object).iloc[split.train].dropna())


def test_a_single_event_of_a_label_can_be_held_out():
    meta, training, events = crash_case(0, n_crash_events=1)
    split = split_samples(meta, training, LabelConfig(5), events)
    assert split.held_out_events == ("crash0",)
    assert (meta["regime"].iloc[split.train] != "crash").all()


def test_an_event_reaching_past_the_training_limit_is_neither_held_out_nor_split():
    days = weekdays(START, 200)
    late = days[150:175]  # straddles the training limit (day 149) and the cutoff (day 160)
    rows = live_rows(days) + event_rows("late", late, "crash")
    meta = make_meta(rows)
    split = split_samples(
        meta, TrainingConfig(0.2, 20), LabelConfig(5), [event("late", late, "crash")]
    )
    assert split.held_out_events == ()
    late_rows = set(np.flatnonzero(meta["event"].astype(object) == "late"))
    assert not late_rows & set(split.validation)
    trained = meta.iloc[np.array(sorted(late_rows & set(split.train)), dtype=np.intp)]
    assert (trained["ts"] <= pd.Timestamp(split.train_end)).all()


def test_live_rows_on_the_days_of_a_held_out_event_do_not_train():
    # The live history covers the event's days (the demo replays the same history).
    days = weekdays(START, 300)
    edays = days[100:110]
    rows = live_rows(days) + event_rows("crash", edays, "crash")
    meta = make_meta(rows)
    split = split_samples(
        meta, TrainingConfig(0.2, 10), LabelConfig(5), [event("crash", edays, "crash")]
    )
    assert split.held_out_events == ("crash",)
    trained = set(meta["ts"].iloc[split.train])
    # The event's days and 10 bars (2 x horizon) either side.
    for day in days[90:120]:
        assert pd.Timestamp(day) not in trained
    assert pd.Timestamp(days[89]) in trained
    assert pd.Timestamp(days[120]) in trained


def test_events_unknown_to_the_configuration_train_and_are_not_held_out():
    meta, training, _ = crash_case(0, n_crash_events=1)
    split = split_samples(meta, training, LabelConfig(5), [])
    assert split.held_out_events == ()
    assert "crash0" in set(meta["event"].astype(object).iloc[split.train].dropna())


# --- errors ---------------------------------------------------------------------------------


def test_no_live_samples_is_an_error_that_says_so():
    meta = make_meta(event_rows("e", weekdays(START, 30), "crash"))
    with pytest.raises(TrainingDataError, match="no live samples among the 30 stored samples"):
        split_samples(meta, TrainingConfig(), LabelConfig(), [])
    assert issubclass(TrainingDataError, RegimedError)


def test_an_empty_training_part_is_an_error_that_says_why():
    meta = make_meta(live_rows(weekdays(START, 12)))
    with pytest.raises(TrainingDataError, match=r"no training rows: the live samples span 12 "):
        split_samples(meta, TrainingConfig(), LabelConfig(5), [])


def test_archive_rows_well_before_a_short_live_window_still_train():
    days = weekdays(START, 12)
    old = weekdays(np.datetime64("2019-06-03"), 20)
    meta = make_meta(live_rows(days) + event_rows("old", old, "normal"))
    split = split_samples(meta, TrainingConfig(), LabelConfig(5), [])
    assert (meta["source"].iloc[split.train] == "archive").all()
    assert len(split.train) == 20
    assert split.train_end < dt.date(2020, 1, 6)
