"""The daemon's start with another `label.target` than the stored live samples': it relabels
them from the stored bars before it consumes, or exits 1 saying why it cannot."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import Config, KafkaConfig, LabelConfig, MetricsConfig, StoreConfig
from daemon.pipeline.engine import history_rows
from daemon.store.sqlite import Store
from tests.factories import write_config

pytestmark = pytest.mark.integration

VOLATILITY = LabelConfig(target="volatility")


@pytest.fixture
def config(tmp_path: Path, sp500, vix) -> Config:
    """A store of direction-labelled live samples; the configuration asks for volatility and
    points at a Kafka that is not there (the start-up runs, then the time limit ends it)."""
    config = Config().replace(
        store=StoreConfig(path=str(tmp_path / "regimed.db")),
        kafka=KafkaConfig(bootstrap_servers=("127.0.0.1:9",)),
        metrics=MetricsConfig(port=0),
    )
    with Store.open(config.store) as store:
        bar_rows, samples = history_rows(config, "^GSPC", sp500.loc["2006":"2007"], vix)
        store.write_batch(bars=bar_rows, samples=samples)
    return dataclasses.replace(config, label=VOLATILITY)


def run(config: Config, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = write_config(config, tmp_path / "config.toml")
    return subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(path), "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_the_daemon_relabels_the_live_samples_before_it_consumes(config, tmp_path: Path):
    with Store.open(config.store) as store:
        n = len(store.read_samples(source="live", labelled=None)[0])
    done = run(config, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"relabelled {n} live samples from the stored bars" in done.stderr
    with Store.open(config.store) as store:
        meta, _ = store.read_samples(source="live", labelled=None, target=VOLATILITY.key)
    assert len(meta) == n


def test_a_live_sample_without_its_bar_stops_the_start_with_exit_1(config, tmp_path: Path):
    with Store.open(config.store) as store:
        day = store.read_samples(source="live")[0]["ts"].iloc[10].strftime("%Y-%m-%d")
        with store.transaction("drop a bar", write=True) as conn:
            conn.execute("DELETE FROM bars WHERE ts = ?", (day,))
    done = run(config, tmp_path)
    assert done.returncode == 1
    assert f"cannot relabel the live samples for label.target {VOLATILITY.key}" in done.stderr
    assert "Traceback" not in done.stderr
