"""Live scoring, drift, the Prometheus metrics and the alerts.

Its public names are its modules; the package loads none of them (River comes with `drift`).
"""

from __future__ import annotations

__all__ = ["alerts", "drift", "live", "metrics"]
