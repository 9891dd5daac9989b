"""Everything in regimed that touches Kafka: event schema, consumer, dead letters, producers.

The client helpers that the service uses are handed on here; the modules (`events`, `dlq`,
`kafka_source`, `step`, `outputs`, `replay`, `broker`) are imported where they are needed, so
importing the package does not load the Kafka client.
"""

from __future__ import annotations

from consumers._client import BrokerWatch, client_options, probe

__all__ = ["BrokerWatch", "client_options", "probe"]
