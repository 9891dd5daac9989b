"""`regimed evaluate`'s progress: fold k of n, the time elapsed and an estimate of the time left,
paced by the training rows of the folds done."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np

from daemon.cli.common import fold_progress
from daemon.evaluation.data import Fold
from daemon.report.progress import Progress, duration, remaining
from tests.factories import Clock


def fold(k: int, train: int, archive: int = 0) -> Fold:
    cutoff = dt.date(2010, 1, 1) + dt.timedelta(days=91 * k)
    return Fold(
        cutoff=cutoff,
        end=cutoff + dt.timedelta(days=91),
        train=np.arange(train),
        archive=np.arange(archive),
        test=np.arange(10),
        events=(),
    )


def test_each_fold_shows_k_of_n_elapsed_and_the_time_left_at_the_pace_per_training_row():
    stream, clock = io.StringIO(), Clock()
    meter = Progress(stream, tty=False, every_s=0.0, clock=clock)
    progress = fold_progress(meter)
    clock.now += 30.0  # loading the data: not part of the folds' pace
    progress(0, 4, fold(0, 900, archive=100))
    clock.now += 100.0  # the first fold: 1000 rows in 100 s
    progress(1, 4, fold(1, 2000))
    clock.now += 200.0  # the second: 2000 rows in 200 s, so 0.1 s per row
    progress(2, 4, fold(2, 3000))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "  fold 1/4 (cutoff 2010-01-01), 30 s elapsed (0%)"
    # Left: 3 folds of 2000 rows at 0.1 s a row; done: 1000 of 7000 rows.
    assert (
        lines[1]
        == "  fold 2/4 (cutoff 2010-04-02), 2 min 10 s elapsed, about 10 min 00 s left (14%)"
    )
    # Left: 2 folds of 3000 rows at 0.1 s a row.
    assert (
        lines[2]
        == "  fold 3/4 (cutoff 2010-07-02), 5 min 30 s elapsed, about 10 min 00 s left (33%)"
    )


def test_the_pace_counts_folds_passed_between_two_lines():
    """A fold that starts while no line is due still counts as done for the next estimate."""
    stream, clock = io.StringIO(), Clock()
    meter = Progress(stream, tty=False, every_s=100.0, clock=clock)
    progress = fold_progress(meter)
    start = clock.now
    for k in range(3):  # 1000 rows a fold, 60 s each: lines only every 100 s
        clock.now = start + 60.0 * k
        progress(k, 5, fold(k, 1000))
    assert stream.getvalue().splitlines() == [
        "  fold 3/5 (cutoff 2010-07-02), 2 min 00 s elapsed, about 3 min 00 s left (40%)"
    ]


def test_remaining_and_duration():
    assert remaining(60.0, 2, 8) == 180.0
    assert remaining(60.0, 0, 8) is None
    assert remaining(60.0, 8, 8) == 0.0
    assert [duration(s) for s in (0, 59.4, 60, 3599, 3600, 7322)] == [
        "0 s", "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "2 h 02 min",
    ]  # fmt: skip
