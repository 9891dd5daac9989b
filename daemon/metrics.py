"""The Prometheus metrics of regimed, on a registry of their own (no global state).

Names follow the contract in docs/metrics.md; no label takes unbounded values (no symbols).
"""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from daemon.config import REGIMES


@dataclass(frozen=True)
class Metrics:
    """Every metric regimed exports, bound to one registry."""

    registry: CollectorRegistry
    events_consumed: Counter
    events_rejected: Counter
    consumer_lag: Gauge
    bars_labeled: Counter
    bars_out_of_order: Counter
    bars_corrected: Counter
    samples_stored: Gauge
    market_regime: Gauge
    vix_proxy_in_use: Gauge
    batches_committed: Counter
    rows_withheld: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """Register every metric on `registry` (a fresh one by default)."""
        reg = registry or CollectorRegistry(auto_describe=True)
        m = cls(
            registry=reg,
            events_consumed=Counter(
                "regimed_events_consumed",
                "Kafka records consumed (valid or not)",
                ["topic"],
                registry=reg,
            ),
            events_rejected=Counter(
                "regimed_events_rejected",
                "Records rejected by validation and sent to the dead-letter topic",
                ["reason"],
                registry=reg,
            ),
            consumer_lag=Gauge(
                "regimed_consumer_lag_messages",
                "Records between the consumer position and the partition end",
                ["partition"],
                registry=reg,
            ),
            bars_labeled=Counter(
                "regimed_bars_labeled",
                "Bars labelled with a regime by the streaming path",
                ["regime"],
                registry=reg,
            ),
            bars_out_of_order=Counter(
                "regimed_bars_out_of_order",
                "Bars older than their symbol's last bar: stored, not fed to the online state",
                registry=reg,
            ),
            bars_corrected=Counter(
                "regimed_bars_corrected",
                "Bars that replaced a stored bar of the same symbol and day with new values",
                registry=reg,
            ),
            samples_stored=Gauge(
                "regimed_samples_stored",
                "Samples in the store by source (live, archive) and regime",
                ["source", "regime"],
                registry=reg,
            ),
            market_regime=Gauge(
                "regimed_market_regime",
                "1 for the current regime of the market symbol, 0 for the others",
                ["regime"],
                registry=reg,
            ),
            vix_proxy_in_use=Gauge(
                "regimed_vix_proxy_in_use",
                "1 when the market symbol's last bar used the VIX proxy instead of the VIX",
                registry=reg,
            ),
            batches_committed=Counter(
                "regimed_batches_committed",
                "Polled batches written to SQLite in one transaction",
                registry=reg,
            ),
            rows_withheld=Counter(
                "regimed_feature_rows_withheld",
                "Bars that gave no feature row (not enough history, no regime or no VIX)",
                registry=reg,
            ),
        )
        for regime in REGIMES:
            m.market_regime.labels(regime=regime).set(0)
        return m

    def set_market_regime(self, regime: str | None) -> None:
        """Mark `regime` as the market's current one (all zero when unknown)."""
        for name in REGIMES:
            self.market_regime.labels(regime=name).set(1 if name == regime else 0)


def serve(metrics: Metrics, host: str, port: int) -> tuple[WSGIServer, object]:
    """Start the HTTP endpoint; returns (server, thread) so the caller can shut both down."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, thread
