"""Live scoring, drift, the Prometheus metrics and the alerts."""
