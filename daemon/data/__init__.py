"""Bars without Kafka: the CSV readers and the bundled histories; this package hands on the
public names."""

from __future__ import annotations

from daemon.data.history import BUNDLED, bundled_path, parse_day, read_bars_csv, read_vix_csv

__all__ = ["BUNDLED", "bundled_path", "parse_day", "read_bars_csv", "read_vix_csv"]
