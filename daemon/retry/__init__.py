"""Waiting before trying again: the capped doubling pause that every retry of regimed uses (the
Kafka start-up, dead letters, a refused champion). Below every layer that retries, so that the
consumers and the live scorer share one implementation without importing each other."""

from __future__ import annotations

from daemon.retry.backoff import Backoff

__all__ = ["Backoff"]
