"""The gate simulation on a small window of the bundled history (its full run:
benchmarks/gate.py, figures in docs/training.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from daemon.config import Config
from daemon.evaluation.data import build_dataset, load_default
from daemon.evaluation.simulation import TRACKS, SimulationSettings, simulate

#: Four years, a retrain every six weeks, one cheap model: about 35 retrains per track.
SETTINGS = SimulationSettings(
    start=dt.date(2008, 1, 1),
    end=dt.date(2012, 1, 1),
    every_weeks=6,
    horizon_weeks=13,
    models=("logistic_regression",),
)


@pytest.fixture(scope="module")
def config() -> Config:
    config = Config()
    return config.replace(gate=dataclasses.replace(config.gate, bootstrap_samples=300))


@pytest.fixture(scope="module")
def data(config):
    return build_dataset(config, load_default())


@pytest.fixture(scope="module")
def honest(config, data):
    return simulate(config, SETTINGS, data)


def test_every_cutoff_retrains_both_tracks_and_the_champion_follows_promotions(honest):
    cutoffs = [c.isoformat() for c in SETTINGS.cutoffs()]
    assert len(cutoffs) == 35
    for track in TRACKS:
        runs = [r for r in honest.retrains if r.track == track]
        assert [r.cutoff for r in runs] == cutoffs
        seen_promotion = False
        for r in runs:
            assert r.had_champion == seen_promotion
            assert r.promoted == (r.rule in ("no_champion", "passed"))
            assert (r.rule == "no_champion") == (r.promoted and not r.had_champion)
            assert r.edge is not None
            difference, low, high = r.edge
            assert low <= difference <= high
            if r.promoted:
                assert low > 0.0  # gate.min_edge
                assert "skill shown" in r.reason
            else:
                assert r.next_difference is None
            # followed over the next 13 weeks only when it replaced a champion
            assert (r.next_difference is not None) == (r.promoted and r.had_champion)
            seen_promotion |= r.promoted
    summary = honest.summary()
    assert {t: summary[t]["retrains"] for t in TRACKS} == {"real": 35, "shuffled": 35}


def test_shuffled_label_candidates_are_rarely_promoted(config, data, honest):
    shuffled = honest.summary()["shuffled"]
    # The gate's lower bound is a 2.5% one-sided test: about 1 of 35 by chance. At most 4 of
    # 35 (11%) leaves room for the seed; a gate deciding on point estimates fails it.
    assert shuffled["promoted"] <= 4, shuffled
    # The same candidates judged on point estimates (no bootstrap) and without the champion
    # rule promote noise whenever its point edge over the references is positive -- about a
    # third of them here: what the assertion above would catch.
    points = config.replace(
        gate=dataclasses.replace(config.gate, bootstrap_samples=0, tolerance=1.0)
    )
    naive = simulate(points, SETTINGS, data).summary()["shuffled"]
    assert naive["promoted"] >= 8, naive
