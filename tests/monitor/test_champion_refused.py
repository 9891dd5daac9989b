"""A champion whose artifact is refused: retried with a capped backoff, reported once per
repeat interval to a real webhook, whatever the registry poll rate (an injected clock)."""

from __future__ import annotations

import dataclasses
import itertools

from daemon.config import AlertsConfig, Config, Secret, StoreConfig
from daemon.monitor.alerts import Alerter
from daemon.monitor.live import CHAMPION_POLL_S, CHAMPION_RETRY_CAP_S, LiveScorer
from daemon.registry.versions import Registry
from daemon.store.sqlite import Store
from tests.factories import Clock, register, serve_webhooks, tamper


def test_a_refused_champion_is_retried_with_backoff_and_alerted_once_per_interval(
    tmp_path,
    models,
):
    clock = Clock()
    with serve_webhooks() as webhook, Store(tmp_path / "regimed.db") as store:
        record = register(Registry(store), "v1", models, promote_reason="gate passed")
        tamper(record)
        hooks = AlertsConfig(webhooks=(Secret(webhook.url("/ok")),), timeout_seconds=2.0)
        config = Config(store=StoreConfig(path=store.path), alerts=hooks)
        alerter = Alerter(config.alerts, clock=clock)

        def refused(version: str, problem: str) -> None:
            alerter.send("artifact_refused", f"{version} refused", {}, f"{version} {problem}")

        scorer = LiveScorer(config, store, on_refused=refused, clock=clock)
        start = clock.now
        tries = []
        # 45 s of the consumer asking every second (it asks at every empty poll)
        while clock.now - start <= 45:
            before = scorer.load_failures
            scorer.refresh()
            if scorer.load_failures > before:
                tries.append(clock.now - start)
            clock.now += 1.0
        assert scorer.model is None
        # 5, 10, 20 s apart instead of every 5 s (9 tries): the backoff doubles
        assert tries == [0.0, CHAMPION_POLL_S, 3 * CHAMPION_POLL_S, 7 * CHAMPION_POLL_S]
        # one alert, from the caller: the registry's own (one per try) is not sent
        assert webhook.events() == ["artifact_refused"]
        # the backoff is capped
        while clock.now - start <= config.alerts.repeat_interval_seconds + CHAMPION_RETRY_CAP_S:
            clock.now += 1.0
            before = scorer.load_failures
            scorer.refresh()
            if scorer.load_failures > before:
                tries.append(clock.now - start)
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert max(gaps) == CHAMPION_RETRY_CAP_S
        # past the repeat interval (an hour by default) the same refusal is reported again
        assert webhook.events() == ["artifact_refused"] * 2


def test_without_a_refusal_callback_the_registry_alerts_as_before(tmp_path, models):
    with serve_webhooks() as webhook, Store(tmp_path / "regimed.db") as store:
        record = register(Registry(store), "v1", models, promote_reason="gate passed")
        tamper(record)
        hooks = AlertsConfig(webhooks=(Secret(webhook.url("/ok")),), timeout_seconds=2.0)
        config = dataclasses.replace(Config(store=StoreConfig(path=store.path)), alerts=hooks)
        scorer = LiveScorer(config, store, clock=Clock())
        assert scorer.refresh(force=True) is False
        assert scorer.load_failures == 1
        assert webhook.events() == ["artifact_refused"]
