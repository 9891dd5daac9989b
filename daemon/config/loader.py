"""The typed, frozen configuration of regimed and where it is loaded from.

Resolution order for the file: an explicit path, then `$REGIMED_CONFIG`, then ./config.toml,
then /etc/regimed/config.toml; with none of them the built-in defaults apply. Every key can be
overridden from the environment as `REGIMED_<SECTION>__<KEY>` (nested tables add more `__`
parts, e.g. `REGIMED_SAMPLING__TARGET_MIX__CRASH`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import re
import socket
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.config.backtest import BacktestConfig
from daemon.config.drift import DriftConfig
from daemon.config.evaluate import EvaluateConfig
from daemon.config.events import EventsConfig
from daemon.config.outputs import OutputsConfig
from daemon.config.runtime import RetrainProcessConfig
from daemon.config.settings import ENV_CONFIG_PATH, Secret, bounded, build, show, to_toml
from daemon.config.training import (
    GateConfig,
    ModelsConfig,
    TrainingConfig,
    check_model_names,
    split_custom_models,
)
from daemon.domain import REGIMES, RegimeName
from daemon.errors import ConfigError

DEFAULT_PATHS: tuple[Path, ...] = (Path("config.toml"), Path("/etc/regimed/config.toml"))

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class KafkaConfig:
    """Where market data comes from and how the consumer group behaves."""

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic: str = "market.bars"
    dlq_topic: str = ""
    group_id: str = "regimed"
    group_instance_id: str = ""
    client_id: str = "regimed"
    leave_group_on_stop: bool = True
    max_poll_records: int = bounded(10_000, ge=1, le=100_000)
    max_poll_interval_ms: int = bounded(300_000, ge=1_000)
    session_timeout_ms: int = bounded(10_000, ge=1_000)
    heartbeat_interval_ms: int = bounded(3_000, ge=100)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_plain_username: str = ""
    sasl_plain_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: Secret = field(default_factory=lambda: Secret(""))

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ConfigError("kafka.bootstrap_servers = []: expected at least one host:port")
        for i, server in enumerate(self.bootstrap_servers):
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(
                    f"kafka.bootstrap_servers[{i}] = {show(server)}: expected host:port"
                )
        if not self.topic:
            raise ConfigError('kafka.topic = "": expected a topic name')
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                f"kafka.heartbeat_interval_ms = {self.heartbeat_interval_ms}: expected less than "
                f"kafka.session_timeout_ms ({self.session_timeout_ms})"
            )

    @property
    def effective_dlq_topic(self) -> str:
        """The dead-letter topic: `dlq_topic`, or `<topic>.dlq` when that is empty."""
        return self.dlq_topic or f"{self.topic}.dlq"

    @property
    def effective_group_instance_id(self) -> str:
        """Static membership id: `group_instance_id`, or `regimed-<host name>`."""
        return self.group_instance_id or f"regimed-{socket.gethostname()}"


@dataclass(frozen=True)
class StoreConfig:
    """The SQLite file; model artifacts live in a folder beside it."""

    path: str = "regimed.db"
    busy_timeout_ms: int = bounded(5_000, ge=0)
    #: Write the consumer's batches in a child process, overlapping with the next poll's work
    #: (`daemon.store.writer`); false: in the consumer thread.
    writer_process: bool = True
    #: At start-up the daemon runs `PRAGMA quick_check` for at most this many seconds (0: no
    #: check); a damaged store is refused, the rest of a store too large for it is unchecked.
    quick_check_seconds: float = bounded(10.0, ge=0)
    #: Empty: the SQLite file at `path`. `postgresql://user@host:port/db` (libpq and TLS
    #: options as URL parameters, e.g. `?sslmode=verify-full`): one PostgreSQL database that
    #: every daemon of the group shares; `path` then only anchors the local lock files.
    url: str = ""
    #: The PostgreSQL password (else libpq's PGPASSWORD or ~/.pgpass); not for the URL.
    password: Secret = field(default_factory=lambda: Secret(""))

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError('store.path = "": expected a file path')
        scheme, _, rest = self.url.partition("://")
        if self.url and scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                f"store.url: scheme {show(scheme if rest else self.url[:20])}: expected empty "
                "(SQLite at store.path) or postgresql://user@host:port/database"
            )
        if "@" in rest.split("/", 1)[0] and ":" in rest.split("@", 1)[0]:
            raise ConfigError(
                "store.url: a password in the URL; give it as store.password or in the "
                "environment (PGPASSWORD) instead"
            )


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    host: str = "127.0.0.1"
    port: int = bounded(9108, ge=0, le=65535)
    certfile: str = ""
    keyfile: str = ""
    client_cafile: str = ""
    healthz_stall_seconds: float = bounded(120.0, gt=0)

    def __post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError(
                "metrics.certfile and metrics.keyfile: expected both (TLS) or neither"
            )
        if self.client_cafile and not self.certfile:
            raise ConfigError(
                f"metrics.client_cafile = {show(self.client_cafile)}: mutual TLS needs "
                "metrics.certfile and metrics.keyfile too"
            )


@dataclass(frozen=True)
class ScheduleConfig:
    """The weekly retrain (APScheduler cron fields) and how late a missed run may still run."""

    day_of_week: str = "sat"
    hour: int = bounded(21, ge=0, le=23)
    minute: int = bounded(0, ge=0, le=59)
    timezone: str = "America/New_York"
    misfire_grace_seconds: int = bounded(6 * 3600, ge=1)

    def __post_init__(self) -> None:
        for part in self.day_of_week.split(","):
            ends = part.strip().split("-")
            if len(ends) > 2 or not all(e in _DAYS for e in ends):
                raise ConfigError(
                    f"schedule.day_of_week = {show(self.day_of_week)}: expected day names "
                    f"({', '.join(_DAYS)}), a range like mon-fri, or a comma-separated list"
                )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"schedule.timezone = {show(self.timezone)}: expected an IANA time zone name "
                "such as America/New_York or UTC"
            ) from None


_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: str, key: str) -> float:
    """Seconds in a duration written as Prometheus and Alertmanager write them.

    >>> parse_duration("1h30m", "alerts.repeat_interval")
    5400.0
    >>> parse_duration("0s", "alerts.repeat_interval")
    0.0
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ConfigError(
            f"{key} = {show(text)}: expected a duration such as \"1h\", \"30m\", \"1h30m\" or "
            "\"90s\" (units y, w, d, h, m, s, ms)"
        )
    return sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if n)


@dataclass(frozen=True)
class AlertsConfig:
    """Where retrain alerts go; webhook URLs often carry tokens, so they are secrets."""

    webhooks: tuple[Secret, ...] = ()
    timeout_seconds: float = bounded(5.0, gt=0)
    #: The same alert (event and cause) goes out at most once per this long: a duration in
    #: Alertmanager's notation ("1h", "30m", "1h30m", "90s"; "0s" sends every one).
    repeat_interval: str = "1h"
    #: One alert when the market symbol enters one of these regimes (once per episode).
    regime_change: tuple[RegimeName, ...] = ("crash", "recovery")

    @property
    def repeat_interval_seconds(self) -> float:
        """`repeat_interval` in seconds."""
        return parse_duration(self.repeat_interval, "alerts.repeat_interval")

    def __post_init__(self) -> None:
        parse_duration(self.repeat_interval, "alerts.repeat_interval")
        for i, hook in enumerate(self.webhooks):
            url = hook.get_secret_value()
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"alerts.webhooks[{i}]: expected an http:// or https:// URL")


@dataclass(frozen=True)
class RegimeConfig:
    """Thresholds and windows of the regime rules (see docs/regimes.md)."""

    #: The S&P 500 as `regimed replay --bundled` and Yahoo Finance name it; set your feed's.
    market_symbol: str = "^GSPC"
    vix_symbol: str = "^VIX"
    price_crash_drop: float = bounded(0.15, gt=0, lt=1)
    price_crash_lookback_bars: int = bounded(10, ge=1)
    recovery_window_bars: int = bounded(63, ge=1)
    recovery_rebound: float = bounded(0.10, gt=0)
    vix_crash: float = bounded(35.0, gt=0)
    vix_high: float = bounded(25.0, gt=0)
    vix_normal: float = bounded(15.0, gt=0)
    vix_max_staleness_days: int = bounded(5, ge=0)
    vix_proxy_window_bars: int = bounded(21, ge=2)
    vix_proxy_scale: float = bounded(1.2, gt=0)
    #: Minutes of consuming without a bar of market_symbol before a warning (0: never).
    market_symbol_timeout_minutes: float = bounded(10.0, ge=0)

    def __post_init__(self) -> None:
        if not self.vix_normal < self.vix_high <= self.vix_crash:
            raise ConfigError(
                f"regime.vix_high = {show(self.vix_high)}: expected regime.vix_normal "
                f"({show(self.vix_normal)}) < regime.vix_high <= regime.vix_crash "
                f"({show(self.vix_crash)})"
            )


@dataclass(frozen=True)
class RegimeShares:
    """One non-negative number per regime (a target mix, or loss weights)."""

    low_volatility: float = bounded(0.2, ge=0)
    normal: float = bounded(0.4, ge=0)
    high_volatility: float = bounded(0.2, ge=0)
    crash: float = bounded(0.1, ge=0)
    recovery: float = bounded(0.1, ge=0)

    def as_dict(self) -> dict[str, float]:
        """The values keyed by regime name, in `REGIMES` order."""
        return {r: float(getattr(self, r)) for r in REGIMES}


def _default_weights() -> RegimeShares:
    return RegimeShares(
        low_volatility=0.8, normal=1.0, high_volatility=1.3, crash=2.0, recovery=1.5
    )


#: What a label says about the next `horizon_bars` bars (docs/configuration.md, `[label]`).
LabelTarget = Literal["direction", "volatility", "drawdown"]


@dataclass(frozen=True)
class LabelConfig:
    """The prediction target over the next `horizon_bars` bars: `direction` (log return above
    `threshold`), `volatility` (realised volatility above that of the previous
    `volatility_window` bars) or `drawdown` (lowest close at least `drawdown_threshold` below
    today's)."""

    horizon_bars: int = bounded(5, ge=1, le=252)
    threshold: float = 0.0
    target: LabelTarget = "direction"
    volatility_window: int = bounded(21, ge=1, le=252)
    drawdown_threshold: float = bounded(0.05, gt=0, lt=1)

    @property
    def key(self) -> str:
        """The target and the parameters that decide its labels, e.g. `direction:h=5:threshold=0`:
        what each stored sample records about how it was labelled."""
        h = f"h={self.horizon_bars}"
        if self.target == "volatility":
            return f"volatility:{h}:window={self.volatility_window}"
        if self.target == "drawdown":
            return f"drawdown:{h}:threshold={show(float(self.drawdown_threshold))}"
        return f"direction:{h}:threshold={show(float(self.threshold))}"


@dataclass(frozen=True)
class SamplingConfig:
    """Regime-balanced sampling of the training part; `output_size` 0 means the input size."""

    seed: int = 42
    output_size: int = bounded(0, ge=0)
    target_mix: RegimeShares = field(default_factory=RegimeShares)

    def __post_init__(self) -> None:
        total = sum(self.target_mix.as_dict().values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"sampling.target_mix = {show(self.target_mix.as_dict())}: expected shares "
                f"that sum to 1 (they sum to {total:.6g})"
            )


@dataclass(frozen=True)
class WeightsConfig:
    """Loss weight per regime: crashes count more than calm days."""

    regime: RegimeShares = field(default_factory=_default_weights)

    def __post_init__(self) -> None:
        for name, value in self.regime.as_dict().items():
            if value <= 0:
                raise ConfigError(f"weights.regime.{name} = {show(value)}: expected a number > 0")


@dataclass(frozen=True)
class ArchiveEvent:
    """One rare event of the archive: a window of trading days (both ends included), the
    regime the event stands for, and its share of the archive's sample budget."""

    name: str
    start: dt.date
    end: dt.date
    label: RegimeName
    share: float = bounded(dataclasses.MISSING, gt=0, le=1)


_EVENT_ROWS: tuple[tuple[str, str, str, RegimeName, float], ...] = (
    ("2008 Financial Crisis", "2008-09-01", "2009-03-31", "crash", 0.20),
    ("2011 Debt Ceiling", "2011-07-01", "2011-08-31", "high_volatility", 0.15),
    ("2015 China Devaluation", "2015-08-01", "2015-09-30", "high_volatility", 0.15),
    ("2018 Volmageddon", "2018-02-01", "2018-02-28", "crash", 0.20),
    ("2020 COVID Crash", "2020-02-20", "2020-03-23", "crash", 0.10),
    ("2020 COVID Recovery", "2020-03-24", "2020-06-30", "recovery", 0.10),
    ("2022 Inflation Bear", "2022-01-01", "2022-12-31", "high_volatility", 0.05),
    ("2023 Banking Crisis", "2023-03-01", "2023-04-30", "high_volatility", 0.05),
)
#: The default rare-event archive (docs/configuration.md, `[archive]`): eight crises and
#: stress periods from 2008 to 2023 with their regime, shares summing to 1.
DEFAULT_EVENTS: tuple[ArchiveEvent, ...] = tuple(
    ArchiveEvent(name, dt.date.fromisoformat(start), dt.date.fromisoformat(end), label, share)
    for name, start, end, label, share in _EVENT_ROWS
)


@dataclass(frozen=True)
class ArchiveConfig:
    """The rare-event archive (`regimed archive build`): which symbols it draws from, how many
    samples it keeps (`budget` 0: every sample of every event) and the events themselves."""

    budget: int = bounded(2000, ge=0)
    seed: int = bounded(42, ge=0)
    symbols: tuple[str, ...] = ("^GSPC", "^IXIC")
    events: tuple[ArchiveEvent, ...] = DEFAULT_EVENTS

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("archive.symbols = []: expected at least one symbol")
        for i, symbol in enumerate(self.symbols):
            if not symbol.strip() or not symbol.isprintable():
                raise ConfigError(f"archive.symbols[{i}] = {show(symbol)}: expected a symbol")
            if symbol in self.symbols[:i]:
                raise ConfigError(f"archive.symbols[{i}] = {show(symbol)}: listed twice")
        if not self.events:
            raise ConfigError("archive.events = []: expected at least one event")
        names: dict[str, int] = {}
        for i, event in enumerate(self.events):
            key = f"archive.events[{i}]"
            if not event.name.strip() or not event.name.isprintable():
                raise ConfigError(f"{key}.name = {show(event.name)}: expected an event name")
            if event.name in names:
                raise ConfigError(
                    f"{key}.name = {show(event.name)}: also the name of "
                    f"archive.events[{names[event.name]}]; expected unique names"
                )
            names[event.name] = i
            if event.start > event.end:
                raise ConfigError(
                    f"{key}.start = {show(event.start)}: expected a day on or before "
                    f"{key}.end ({show(event.end)})"
                )
        # A sample is stored once per (symbol, day), so it can belong to one event only.
        order = sorted(range(len(self.events)), key=lambda i: self.events[i].start)
        for a, b in itertools.pairwise(order):
            first, second = self.events[a], self.events[b]
            if second.start <= first.end:
                raise ConfigError(
                    f"archive.events[{b}].start = {show(second.start)}: overlaps "
                    f"archive.events[{a}] ({first.name}, {show(first.start)}..{show(first.end)})"
                    "; expected disjoint event windows"
                )
        total = sum(e.share for e in self.events)
        if abs(total - 1.0) > 1e-6:
            shares = ", ".join(f"{e.name} {show(e.share)}" for e in self.events)
            raise ConfigError(
                f"archive.events: the shares sum to {total:.6g} ({shares}); expected 1"
            )


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    retrain: RetrainProcessConfig = field(default_factory=RetrainProcessConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)

    def to_toml(self, *, changed_only: bool = False) -> str:
        """The effective configuration as TOML, with secrets masked; `changed_only`: only the
        values that differ from the built-in defaults."""
        return to_toml(self, base=Config() if changed_only else None)

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections replaced (handy in tests and tools)."""
        return dataclasses.replace(self, **sections)


def resolve_config_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The file to load: explicit path, `$REGIMED_CONFIG`, ./config.toml, /etc/regimed/...

    An explicit or environment-given path must exist; the two default locations are optional.
    """
    env = os.environ if env is None else env
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        return path
    if env.get(ENV_CONFIG_PATH):
        path = Path(env[ENV_CONFIG_PATH])
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG_PATH}={path}: no such file")
        return path
    for candidate in DEFAULT_PATHS:
        if candidate.is_file():
            return candidate
    return None


def parse_config(
    text: str, env: Mapping[str, str] | None = None, source: str = "<string>"
) -> Config:
    """Build a `Config` from TOML text plus `REGIMED_` overrides in `env`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return build_config(data, os.environ if env is None else env)


def build_config(data: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """A `Config` from parsed TOML (or the same as plain JSON values) plus `REGIMED_` overrides
    in `env`: the custom models' `[models.NAME]` tables taken out first (their keys are the
    user's), then every section built and the model names of `training` checked against them."""
    data = dict(data)
    custom: tuple[Any, ...] = ()
    if isinstance(data.get("models"), Mapping):
        data["models"], custom = split_custom_models(data["models"])
    result: Config = build(Config, data, env)
    if custom:
        result = result.replace(models=dataclasses.replace(result.models, custom=custom))
    check_model_names(result.training, result.models)
    return result


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Config, Path | None]:
    """Load the effective configuration and say which file it came from (None: defaults)."""
    env = os.environ if env is None else env
    resolved = resolve_config_path(path, env)
    text = ""
    if resolved is not None:
        try:
            text = resolved.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{resolved}: cannot read: {exc}") from None
    try:
        return parse_config(text, env, str(resolved or "<defaults>")), resolved
    except ConfigError as exc:
        if resolved is None:
            raise
        raise ConfigError(f"{resolved}: {exc}") from None
