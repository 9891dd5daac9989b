"""The process: the service, its retrains and scheduler, status and sd_notify."""
