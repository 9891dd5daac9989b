"""Live scoring, drift, the Prometheus metrics and the alerts.

The public names are its modules, imported where they are needed: importing the package loads
none of them, so a process that needs one small module does not load the libraries of the others.
"""

from __future__ import annotations

__all__ = ["alerts", "drift", "live", "metrics"]
