"""Everything in regimed that touches Kafka: event schema, consumer, dead letters, producers."""

from __future__ import annotations
