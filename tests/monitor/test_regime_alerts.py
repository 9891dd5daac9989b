"""Regime-change alerts on the bundled S&P 500 with its VIX: one webhook per episode of a
watched regime, with the day, the regime before and the VIX, to a real local HTTP server;
nothing for an episode already under way at a restart, nothing for unwatched regimes."""

from __future__ import annotations

import random

import pytest

from daemon.config import AlertsConfig, Config, RegimeConfig, Secret, StoreConfig
from daemon.monitor.alerts import Alerter
from daemon.monitor.regime_alerts import REGIME_CHANGE, RegimeChangeAlerts, market_bars
from daemon.pipeline.engine import history_rows
from daemon.pipeline.output import Output
from daemon.store.sqlite import Store
from tests.factories import serve_webhooks


@pytest.fixture(scope="module")
def market(sp500, vix):
    """The bundled ^GSPC bars of 2014-2018 with the regimes the rules give them."""
    config = Config(regime=RegimeConfig(market_symbol="^GSPC"))
    bars, _ = history_rows(config, "^GSPC", sp500.loc["2013-01-01":], vix)
    return [b for b in bars if b.ts >= "2014-01-01"]


def episodes(bars, watched, previous=None):
    """(ts, regime, previous) of each run of bars in a watched regime, from the labels."""
    found = []
    for bar in bars:
        if bar.regime is None or bar.regime == previous:
            continue
        if bar.regime in watched:
            found.append((bar.ts, bar.regime, previous))
        previous = bar.regime
    return found


def in_batches(bars, seed):
    """The bars cut into polls of random sizes, as the consumer hands them over."""
    rng = random.Random(seed)
    k = 0
    while k < len(bars):
        n = rng.randint(1, 40)
        yield Output(bars=bars[k : k + n])
        k += n


def alerts_config(url, watched=("crash", "recovery")):
    return Config(
        regime=RegimeConfig(market_symbol="^GSPC"),
        alerts=AlertsConfig(webhooks=(Secret(url),), timeout_seconds=2.0, regime_change=watched),
    )


def test_one_webhook_per_episode_with_day_previous_regime_and_vix(market):
    expected = episodes(market, {"crash", "recovery"})
    assert len(expected) >= 2  # the 2015 and 2018 VIX spikes
    with serve_webhooks() as webhook:
        config = alerts_config(webhook.url("/hook"))
        alerter = Alerter(config.alerts)
        alerts = RegimeChangeAlerts(config, alerter.send)
        for out in in_batches(market, seed=1):
            alerts.observe(market_bars(out, "^GSPC"))
    bodies = [body for _, _, body in webhook.received]
    assert [b["event"] for b in bodies] == [REGIME_CHANGE] * len(expected)
    got = [(b["details"]["date"], b["details"]["regime"], b["details"]["previous_regime"])
           for b in bodies]  # fmt: skip
    assert got == [(ts, regime, prev) for ts, regime, prev in expected]
    by_day = {b.ts: b for b in market}
    for body in bodies:
        bar = by_day[body["details"]["date"]]
        assert body["details"]["vix"] == bar.vix
        assert body["details"]["vix_source"] == bar.vix_source
        assert body["summary"].startswith(f"market ^GSPC entered {bar.regime} on {bar.ts} (was ")
        assert f"VIX {bar.vix:.2f}" in body["summary"]


def test_only_the_watched_regimes_alert(market):
    sent = []
    config = alerts_config("http://127.0.0.1:9/unused", watched=("high_volatility",))
    alerts = RegimeChangeAlerts(config, lambda *alert: sent.append(alert))
    for out in in_batches(market, seed=2):
        alerts.observe(market_bars(out, "^GSPC"))
    assert [(d["date"], d["regime"]) for _, _, d, _ in sent] == [
        (ts, regime) for ts, regime, _ in episodes(market, {"high_volatility"})
    ]
    none = RegimeChangeAlerts(alerts_config("http://127.0.0.1:9/unused", watched=()),
                              lambda *alert: sent.append(alert))  # fmt: skip
    before = len(sent)
    none.observe(market_bars(Output(bars=market), "^GSPC"))
    assert len(sent) == before


def test_a_restart_inside_an_episode_does_not_announce_it_again(market, tmp_path):
    first_crash = next(k for k, b in enumerate(market) if b.regime == "crash")
    cut = first_crash + 1  # the daemon stops one bar into the crash
    sent = []
    config = alerts_config("http://127.0.0.1:9/unused").replace(
        store=StoreConfig(path=str(tmp_path / "regimed.db"))
    )
    before = RegimeChangeAlerts(config, lambda *alert: sent.append(alert))
    before.observe(market_bars(Output(bars=market[:cut]), "^GSPC"))
    with Store.open(config.store) as store:
        store.write_batch(bars=market[:cut])
        after = RegimeChangeAlerts(config, lambda *alert: sent.append(alert))
        after.restore(store)
    assert (after.previous, after.last_ts) == ("crash", market[cut - 1].ts)
    after.observe(market_bars(Output(bars=market[cut - 5 : cut + 200]), "^GSPC"))  # replayed
    dates = [d["date"] for _, _, d, _ in sent]
    assert dates.count(market[first_crash].ts) == 1
    assert dates == [ts for ts, _, _ in episodes(market[: cut + 200], {"crash", "recovery"})]
