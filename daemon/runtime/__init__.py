"""The process: the service, the per-poll ingest step, its retrains and scheduler, status and
sd_notify."""
