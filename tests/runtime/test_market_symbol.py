"""The shipped configuration's market symbol is one `regimed replay --bundled` publishes, and a
market symbol that never arrives is a WARNING and a metric, not silence."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import pytest

from consumers.replay import bundled_events, publish
from daemon.config import load_config
from daemon.domain import Bar
from daemon.pipeline.engine import Output, Pipeline
from daemon.runtime.service import Service

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_gets_a_market_regime_from_the_bundled_replay():
    config, _ = load_config(str(REPO / "config.toml"))
    events = bundled_events(config.regime.vix_symbol)
    assert config.regime.market_symbol in {e.symbol for e in events}
    # the first 150 trading days of the replay, in the order it publishes them
    pipeline, out = Pipeline(config), Output()
    for e in events[:450]:
        pipeline.process(Bar(e.symbol, e.day, e.open, e.high, e.low, e.close, e.volume), out)
    assert out.market is not None and out.market.regime is not None


@pytest.mark.integration
def test_a_market_symbol_that_never_arrives_is_one_warning_and_a_metric(kafka_config, caplog):
    config = kafka_config.replace(
        regime=dataclasses.replace(
            kafka_config.regime, market_symbol="SPY", market_symbol_timeout_minutes=0.02
        )
    )
    publish(config.kafka, bundled_events()[:300], progress=False)
    service = Service(config)
    thread = threading.Thread(target=service.run, kwargs={"timeout_s": 60})
    missing = service.metrics.registry.get_sample_value
    caplog.set_level(logging.WARNING, logger="daemon.runtime.service")
    thread.start()
    try:
        deadline = time.monotonic() + 45
        while missing("regimed_market_symbol_missing") != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert missing("regimed_market_symbol_missing") == 1
    finally:
        service.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records if "market_symbol" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "'SPY'" in warnings[0] and "symbols seen: ^GSPC, ^IXIC" in warnings[0]


@pytest.mark.integration
def test_the_market_symbol_arriving_keeps_the_metric_at_0(kafka_config):
    config = kafka_config.replace(
        regime=dataclasses.replace(kafka_config.regime, market_symbol_timeout_minutes=0.01)
    )
    events = bundled_events()[:300]
    publish(config.kafka, events, progress=False)
    service = Service(config)
    thread = threading.Thread(
        target=service.run, kwargs={"timeout_s": 60, "max_messages": len(events)}
    )
    thread.start()
    thread.join(timeout=70)
    assert not thread.is_alive()
    registry = service.metrics.registry
    assert registry.get_sample_value("regimed_market_symbol_missing") == 0
    assert sum(
        registry.get_sample_value("regimed_market_regime", {"regime": r}) or 0
        for r in ("crash", "recovery", "high_volatility", "normal", "low_volatility")
    ) == 1
