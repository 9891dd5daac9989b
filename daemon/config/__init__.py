"""Typed, frozen configuration: the loader with the small sections (`daemon.config.loader`) and
one module per large section; this package hands on the public names."""

from __future__ import annotations

from daemon.config.drift import DriftConfig
from daemon.config.events import EventsConfig
from daemon.config.loader import (
    AlertsConfig,
    ArchiveConfig,
    ArchiveEvent,
    Config,
    KafkaConfig,
    LabelConfig,
    LabelTarget,
    MetricsConfig,
    RegimeConfig,
    RegimeShares,
    SamplingConfig,
    ScheduleConfig,
    StoreConfig,
    build_config,
    load_config,
    parse_config,
    parse_duration,
    resolve_config_path,
)
from daemon.config.outputs import OutputsConfig
from daemon.config.settings import Secret
from daemon.config.training import GateConfig, ModelsConfig, TrainingConfig

__all__ = [
    "AlertsConfig",
    "ArchiveConfig",
    "ArchiveEvent",
    "Config",
    "DriftConfig",
    "EventsConfig",
    "GateConfig",
    "KafkaConfig",
    "LabelConfig",
    "LabelTarget",
    "MetricsConfig",
    "ModelsConfig",
    "OutputsConfig",
    "RegimeConfig",
    "RegimeShares",
    "SamplingConfig",
    "ScheduleConfig",
    "Secret",
    "StoreConfig",
    "TrainingConfig",
    "build_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "resolve_config_path",
]
