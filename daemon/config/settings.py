"""Generic machinery behind `daemon.config`: build frozen dataclasses from TOML and environment.

The schema lives in `daemon.config`; this module only knows how to turn plain TOML values (or
environment strings) into the annotated field types, and how to say precisely what was wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from daemon.errors import ConfigError

ENV_PREFIX = "REGIMED_"
ENV_CONFIG_PATH = "REGIMED_CONFIG"

_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LIST_ITEM = re.compile(r"\[\d+\]$")


class Secret:
    """A string that never shows itself in logs, reprs or the printed effective config."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The real value, for the one place that must hand it to a client library."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "********" if self._value else ""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Numeric bounds for a field, attached through `field(metadata=...)`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violated(self, value: float) -> bool:
        return (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        parts = []
        for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {_number_text(bound)}")
        return " and ".join(parts)


def bounded(default: Any, **limits: float) -> Any:
    """A dataclass field with a default and numeric bounds (ge, gt, le, lt).

    `dataclasses.MISSING` as the default makes the key required (e.g. in an array of tables).
    """
    return dataclasses.field(default=default, metadata={"bounds": Bounds(**limits)})


def show(value: Any) -> str:
    """Render a value the way it would appear in TOML, for error messages."""
    if isinstance(value, Secret):
        return '"********"' if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):  # a TOML local date (or date-time)
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _number_text(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Origin:
    """Where a value came from, so messages can point at the environment variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env_keys = dict(env)

    def suffix(self, key: str) -> str:
        var = self.env_keys.get(_LIST_ITEM.sub("", key))  # an item of a list names the list's
        return f" (from {var})" if var else ""

    def within(self, path: str) -> list[str]:
        """The variables that set a key inside the section `path`, sorted."""
        return sorted(v for k, v in self.env_keys.items() if k.startswith(f"{path}."))


def build(cls: type[Any], data: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """Build the dataclass `cls` from TOML data merged with `REGIMED_` overrides in `env`."""
    merged, origins = _merge_env(cls, data, env)
    return _build(cls, merged, "", _Origin(origins), None)


def _merge_env(
    cls: type[Any], data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = _deep_copy(data)
    origins: dict[str, str] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG_PATH:
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"{var}: expected REGIMED_<SECTION>__<KEY>, e.g. REGIMED_KAFKA__BOOTSTRAP_SERVERS"
            )
        target: type[Any] | None = cls
        for part in parts:
            target_fields = _field_types(target) if target is not None else {}
            if part not in target_fields:
                raise ConfigError(f"{var}: no configuration key {'.'.join(parts)}")
            hint = target_fields[part]
            target = hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
        if target is not None:
            raise ConfigError(f"{var}: {'.'.join(parts)} is a section, not a key")
        node = merged
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[:-1])}: expected a table")
            node = child
        node[parts[-1]] = _EnvText(env[var])
        origins[".".join(parts)] = var
    return merged, origins


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


class _EnvText(str):
    """A string that came from the environment and may be coerced to the field's type."""


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _default(f: dataclasses.Field[Any]) -> Any:
    """The default value of a field (None when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls: type[Any], data: Any, path: str, origin: _Origin, base: Any) -> Any:
    """`cls` from `data`; a key `data` lacks takes its value from `base` (the default of the
    enclosing field, e.g. the loss weights for `weights.regime`), else the class default."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'} = {show(data)}: expected a table")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        known = ", ".join(sorted(types_))
        raise ConfigError(f"{key}: unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if base is not None:
                values[f.name] = getattr(base, f.name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required = ", ".join(g.name for g in dataclasses.fields(cls))
                raise ConfigError(f"{key}: missing key (each entry here needs {required})")
            continue
        hint = types_[f.name]
        if dataclasses.is_dataclass(hint):
            inner = _default(f) if base is None else getattr(base, f.name)
            values[f.name] = _build(typing.cast(type[Any], hint), data[f.name], key, origin, inner)
            continue
        value = _convert(hint, data[f.name], key, origin)
        bounds = f.metadata.get("bounds")
        if bounds is not None and not isinstance(value, str) and bounds.violated(value):
            raise ConfigError(
                f"{key} = {show(value)}{origin.suffix(key)}: expected a number {bounds.describe()}"
            )
        values[f.name] = value
    try:
        return cls(**values)
    except ConfigError as exc:
        # A check across keys (e.g. shares that must sum to 1): name the overrides involved.
        names = origin.within(path)
        if not names:
            raise
        raise ConfigError(f"{exc} (environment overrides here: {', '.join(names)})") from None
    except (TypeError, ValueError) as exc:  # pragma: no cover - schema bug, not user input
        raise ConfigError(f"{path or '<root>'}: {exc}") from exc


def _convert(hint: Any, raw: Any, key: str, origin: _Origin) -> Any:
    where = f"{key} = {show(raw)}{origin.suffix(key)}"
    from_env = isinstance(raw, _EnvText)
    origin_type = get_origin(hint)
    if hint is bool:
        if from_env:
            text = raw.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
        if isinstance(raw, bool) and not from_env:
            return raw
        raise ConfigError(f"{where}: expected true or false")
    if hint is int:
        if from_env:
            try:
                return int(raw.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a whole number") from None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: expected a whole number")
    if hint is float:
        value: float
        if from_env:
            try:
                value = float(raw.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number") from None
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        else:
            raise ConfigError(f"{where}: expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number")
        return value
    if hint is str:
        if isinstance(raw, str):
            return str(raw)
        raise ConfigError(f"{where}: expected a string")
    if hint is dt.date:
        if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
            return raw
        if isinstance(raw, str) and _ISO_DAY.match(raw.strip()):
            try:
                return dt.date.fromisoformat(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a date as YYYY-MM-DD")
    if hint is Secret:
        if isinstance(raw, str):
            return Secret(str(raw))
        raise ConfigError(f"{key}: expected a string")
    if origin_type is Literal:
        choices = get_args(hint)
        if isinstance(raw, str) and str(raw) in choices:
            return str(raw)
        options = ", ".join(json.dumps(c) for c in choices)
        raise ConfigError(f"{where}: expected one of {options}")
    if origin_type is tuple:
        (item,) = [a for a in get_args(hint) if a is not Ellipsis]
        if dataclasses.is_dataclass(item):
            if from_env:
                raise ConfigError(
                    f"{key}{origin.suffix(key)}: a list of tables cannot come from the "
                    f"environment; set [[{key}]] in the configuration file"
                )
            if not isinstance(raw, list):
                raise ConfigError(f"{where}: expected a list of tables ([[{key}]])")
            return tuple(
                _build(typing.cast(type[Any], item), v, f"{key}[{i}]", origin, None)
                for i, v in enumerate(raw)
            )
        items: list[Any]
        if from_env:
            text = raw.strip()
            items = [] if not text else [_EnvText(p.strip()) for p in text.split(",")]
        elif isinstance(raw, list):
            items = raw
        else:
            raise ConfigError(f"{where}: expected a list")
        return tuple(_convert(item, v, f"{key}[{i}]", origin) for i, v in enumerate(items))
    if origin_type in (types.UnionType, typing.Union):
        # e.g. `int | Literal["auto"]`: the first member that takes the value
        expected = []
        for member in get_args(hint):
            try:
                return _convert(member, raw, key, origin)
            except ConfigError as exc:
                expected.append(str(exc).rsplit(": expected ", 1)[-1])
        raise ConfigError(f"{where}: expected {' or '.join(expected)}")
    raise ConfigError(f"{where}: unsupported field type {hint!r}")  # pragma: no cover


def to_toml(obj: Any, path: str = "", base: Any = None) -> str:
    """Render a built config as TOML, secrets masked. Sections come after plain keys; a
    non-empty tuple of dataclasses becomes an array of tables (`[[key]]`).

    With `base` (an object of the same type, e.g. the defaults), only what differs from it:
    keys equal to base's and sections without a difference are left out.
    """
    plain: list[str] = []
    tables: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        other = None if base is None else getattr(base, f.name)
        if base is not None and value == other:
            continue
        key = f"{path}.{f.name}" if path else f.name
        if f.metadata.get("named_tables"):  # e.g. the custom models, each as [models.NAME]
            tables.extend(item.toml(path) for item in value)
        elif dataclasses.is_dataclass(value):
            tables.append(f"[{key}]\n" + to_toml(value, key, other))
        elif isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
            tables.extend(f"[[{key}]]\n" + to_toml(item, key) for item in value)
        else:
            plain.append(f"{f.name} = {show(value)}")
    head = "\n".join(plain)
    parts = [head + "\n"] if plain else []
    parts.extend(tables)
    return "\n".join(parts)
