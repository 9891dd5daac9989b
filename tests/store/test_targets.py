"""Each sample records the target that labelled it; another configured target relabels the
live samples from the stored bars (or refuses), and archive samples of another target stay out
of every fit."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import pytest

from daemon.config import Config, LabelConfig, StoreConfig
from daemon.errors import RelabelRefused
from daemon.pipeline.engine import history_rows
from daemon.pipeline.labels import future_labels
from daemon.store.locks import daemon_lock
from daemon.store.sqlite import Store
from daemon.store.targets import retrain_target, set_target, use_target

DIRECTION = LabelConfig()
VOLATILITY = LabelConfig(target="volatility")


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request, tmp_path: Path, sp500, vix) -> Config:
    """A store (on each backend) with three years of S&P 500 bars and their live samples, and
    archive samples of the Nasdaq's same years, all labelled for the default direction target."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    config = Config().replace(store=StoreConfig(path=str(tmp_path / "regimed.db"), url=url))
    bars = sp500.loc["2006":"2008"]
    with Store.open(config.store) as store:
        bar_rows, samples = history_rows(config, "^GSPC", bars, vix)
        store.write_batch(bars=bar_rows, samples=samples)
        _, archive = history_rows(config, "^IXIC", bars, vix, "archive", "2008 Financial Crisis")
        store.write_batch(samples=[s for s in archive if s.label is not None])
    return config


def labels_of(store: Store, target: str) -> dict[str, int | None]:
    meta, _ = store.read_samples(source="live", labelled=None, target=target)
    return {
        ts.strftime("%Y-%m-%d"): None if pd.isna(v) else int(v)
        for ts, v in zip(meta["ts"], meta["label"], strict=True)
    }


def test_another_target_relabels_the_live_samples_from_the_stored_bars(config, caplog):
    with Store.open(config.store) as store:
        before = labels_of(store, DIRECTION.key)
        assert len(before) > 300
        assert use_target(store, DIRECTION).relabelled == 0  # already the target
        caplog.set_level(logging.WARNING)
        check = use_target(store, VOLATILITY)
        assert (check.relabelled, check.previous) == (len(before), DIRECTION.key)
        assert f"relabelled {len(before)} live samples" in caplog.text
        assert labels_of(store, DIRECTION.key) == {}
        after = labels_of(store, VOLATILITY.key)
        bars = store.bars(symbol="^GSPC")
        expected = future_labels(VOLATILITY, bars.set_index("ts")["close"])
        assert after == {
            ts.strftime("%Y-%m-%d"): None if pd.isna(v) else int(v)
            for ts, v in expected.items()
            if ts.strftime("%Y-%m-%d") in after
        }
        assert after != before
        assert list(after.values())[-5:] == [None] * 5  # pending again until bar t+5
        # new samples record the live target; going back relabels to the first labels
        assert use_target(store, DIRECTION).relabelled == len(before)
        assert labels_of(store, DIRECTION.key) == before


def test_a_sample_without_its_bar_refuses_the_relabel_and_changes_nothing(config):
    with Store.open(config.store) as store:
        before = labels_of(store, DIRECTION.key)
        day = sorted(before)[100]
        with store.transaction("drop a bar", write=True) as conn:
            conn.execute("DELETE FROM bars WHERE symbol = '^GSPC' AND ts = ?", (day,))
        with pytest.raises(RelabelRefused) as err:
            use_target(store, VOLATILITY)
        message = str(err.value)
        assert "label.target volatility:h=5:window=21" in message
        assert f"^GSPC's ({day})" in message and DIRECTION.key in message
        assert labels_of(store, DIRECTION.key) == before  # one transaction: rolled back


def test_archive_samples_of_another_target_are_left_out_with_a_warning(config, caplog):
    caplog.set_level(logging.WARNING)
    with Store.open(config.store) as store:
        archived = len(store.read_samples(source="archive")[0])
        assert archived > 300
        check = use_target(store, VOLATILITY)
        assert check.archive_left_out == archived
        assert "`regimed archive build`" in caplog.text
        meta, _ = store.read_samples(labelled=True, target=VOLATILITY.key)
        assert set(meta["source"]) == {"live"}  # never mixed into a fit of volatility
        # a rebuild for the target makes the archive samples count again
        set_target(store, "archive", VOLATILITY)
        _, rows = history_rows(
            dataclasses.replace(config, label=VOLATILITY),
            "^IXIC",
            store.bars(symbol="^GSPC").set_index("ts"),
            None,
            "archive",
            "2008 Financial Crisis",
        )
        store.write_batch(samples=[s for s in rows if s.label is not None])
        assert use_target(store, VOLATILITY).archive_left_out == 0
        meta, _ = store.read_samples(labelled=True, target=VOLATILITY.key)
        assert set(meta["source"]) == {"live", "archive"}


def test_a_retrain_relabels_only_while_no_daemon_runs_on_the_store(config):
    with Store.open(config.store) as store:
        before = labels_of(store, DIRECTION.key)
        with daemon_lock(config.store.path):  # a daemon labelling for direction
            with pytest.raises(RelabelRefused) as err:
                retrain_target(store, VOLATILITY)
            assert "restart the daemon with this configuration" in str(err.value)
            assert labels_of(store, DIRECTION.key) == before
            assert retrain_target(store, DIRECTION).relabelled == 0  # its own target: fine
        assert retrain_target(store, VOLATILITY).relabelled == len(before)
