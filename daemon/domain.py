"""The nouns every layer shares: the regime names, the daily `Bar`, the rows the pipeline
builds and the store keeps, and the `Backoff` every retry of the daemon waits by.

A `Bar` is the unit that flows from Kafka through the pipeline into the store. The rows check
their values when built (a bad value raises `StoreError` naming the row type and field), except
through their `unchecked` constructors, which the pipeline uses for values valid by construction.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, TypeVar, cast

from daemon.errors import StoreError

# numpy is imported only where a row needs it (the samples' feature vectors): the configuration
# takes the regime names from here, and `regimed check-config` and `--help` load no numpy.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "BAR_FIELDS",
    "REGIMES",
    "REJECTION_REASONS",
    "SOURCES",
    "VIX_SOURCES",
    "Backoff",
    "Bar",
    "BarRow",
    "Batch",
    "DeadLetterRow",
    "LabelUpdate",
    "OutboxRow",
    "PredictionRow",
    "RegimeName",
    "RowBlock",
    "SampleRow",
    "Source",
]

#: The five regime labels, from calmest to most stressed, then recovery.
REGIMES: tuple[str, ...] = ("low_volatility", "normal", "high_volatility", "crash", "recovery")
#: One of `REGIMES`, as a type.
RegimeName = Literal["low_volatility", "normal", "high_volatility", "crash", "recovery"]

Source = Literal["live", "archive"]
#: A row of `dead_letters`, a rejected record the dead-letter topic did not take: source topic,
#: partition and offset, reason, key, value (perhaps a bounded copy), headers (a JSON array of
#: [name, value] pairs) and when it was parked (ISO 8601).
DeadLetterRow = tuple[str, int, int, str, bytes | None, bytes, str, str]
#: A record for an output topic, serialised once (`daemon.pipeline.records`): topic, key and
#: value bytes. Written to the store's outbox in the batch's transaction, published as stored.
OutboxRow = tuple[str, bytes, bytes]
SOURCES: tuple[Source, ...] = ("live", "archive")
#: Every reason a market-data event can be rejected for: a bounded set, so it can label a
#: metric (`regimed_events_rejected_total{reason}`).
REJECTION_REASONS: tuple[str, ...] = (
    "too_large",
    "undecodable",
    "not_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "bad_symbol",
    "key_mismatch",
    "bad_ts",
    "future_ts",
    "bad_interval",
    "non_finite",
    "non_positive_price",
    "high_below_open_close",
    "low_above_open_close",
    "negative_volume",
    "ts_before_min_date",
    "price_above_max",
)
VIX_SOURCES = ("vix", "proxy", "none")
#: A `BarRow` as the parameters of the bar statements (`RowBlock.bars` order).
BAR_FIELDS = operator.attrgetter(
    "symbol", "ts", "open", "high", "low", "close", "volume", "regime", "vix", "vix_source"
)


@dataclass(frozen=True)
class Bar:
    """One validated daily bar of one symbol (what a market-data event carries)."""

    symbol: str
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def ts(self) -> str:
        """The trading day as stored: YYYY-MM-DD."""
        return self.day.isoformat()

    def to_json(self) -> bytes:
        """The canonical event payload for this bar (what producers publish)."""
        payload = {
            "symbol": self.symbol,
            "ts": self.ts,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "interval": "1d",
        }
        return json.dumps(payload, separators=(",", ":")).encode()


def check_text(owner: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise StoreError(f"{owner}.{name} = {value!r}: expected a non-empty printable string")


def check_day(owner: str, value: object) -> None:
    if isinstance(value, str) and len(value) == 10:
        try:
            dt.date.fromisoformat(value)
            return
        except ValueError:
            pass
    raise StoreError(f"{owner}.ts = {value!r}: expected a date as 'YYYY-MM-DD'")


def check_finite(
    owner: str, name: str, value: object, *, optional: bool = False, minimum: float | None = None
) -> None:
    if optional and value is None:
        return
    if (
        isinstance(value, bool)
        or not _is_number(value)
        or not math.isfinite(value)
        or (minimum is not None and value < minimum)
    ):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise StoreError(f"{owner}.{name} = {value!r}: expected a finite number{bound}")


def _is_number(value: object) -> TypeGuard[int | float | np.floating[Any] | np.integer[Any]]:
    """An int or a float, or a numpy integer or floating scalar."""
    if isinstance(value, int | float):
        return True
    numpy = sys.modules.get("numpy")  # a numpy scalar exists only once numpy is imported
    return numpy is not None and isinstance(value, numpy.floating | numpy.integer)


def check_label(owner: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or value not in (0, 1)):
        raise StoreError(f"{owner}.label = {value!r}: expected 0, 1 or None (pending)")


def check_source(owner: str, value: object) -> None:
    if value not in SOURCES:
        raise StoreError(f"{owner}.source = {value!r}: expected 'live' or 'archive'")


def check_regime(owner: str, value: object, *, optional: bool = False) -> None:
    if not (optional and value is None) and value not in REGIMES:
        raise StoreError(f"{owner}.regime = {value!r}: expected one of {', '.join(REGIMES)}")


_Row = TypeVar("_Row")


def _unchecked(cls: type[_Row], values: dict[str, Any]) -> _Row:
    """An instance of the frozen dataclass `cls` with these field values, without running
    `__init__` and `__post_init__` (a tenth of their cost)."""
    row = object.__new__(cls)
    object.__setattr__(row, "__dict__", values)
    return row


@dataclass(frozen=True)
class BarRow:
    """One daily bar with the regime the rules gave it; `ts` is 'YYYY-MM-DD'."""

    symbol: str
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    regime: str | None = None
    vix: float | None = None
    vix_source: str = "none"

    def __post_init__(self) -> None:
        check_text("BarRow", "symbol", self.symbol)
        check_day("BarRow", self.ts)
        for name in ("open", "high", "low", "close", "volume"):
            check_finite("BarRow", name, getattr(self, name))
        check_regime("BarRow", self.regime, optional=True)
        check_finite("BarRow", "vix", self.vix, optional=True)
        if self.vix_source not in VIX_SOURCES:
            raise StoreError(
                f"BarRow.vix_source = {self.vix_source!r}: expected one of {', '.join(VIX_SOURCES)}"
            )

    @classmethod
    def unchecked(
        cls,
        symbol: str,
        ts: str,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        regime: str | None,
        vix: float | None,
        vix_source: str,
    ) -> BarRow:
        """A row without the constructor's checks, for values valid by construction (the
        pipeline's rows of a validated `Bar`); the checks cost more than the row's storage."""
        return _unchecked(
            cls,
            {
                "symbol": symbol,
                "ts": ts,
                "open": open,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "regime": regime,
                "vix": vix,
                "vix_source": vix_source,
            },
        )


@dataclass(frozen=True, eq=False)
class SampleRow:
    """One training sample: a feature vector, its regime and weight, and its label.

    `label` is None while the sample is pending (the label arrives `label.horizon_bars` bars
    later, see `LabelUpdate`). `features` is copied to a read-only float32 vector. Rows compare
    by identity because they hold an array.
    """

    symbol: str
    ts: str
    source: Source
    regime: str
    weight: float
    label: int | None
    features: npt.NDArray[np.floating[Any]]
    feature_version: int
    event: str | None = None

    def __post_init__(self) -> None:
        check_text("SampleRow", "symbol", self.symbol)
        check_day("SampleRow", self.ts)
        check_source("SampleRow", self.source)
        check_regime("SampleRow", self.regime)
        check_finite("SampleRow", "weight", self.weight, minimum=0.0)
        check_label("SampleRow", self.label)
        if isinstance(self.feature_version, bool) or not isinstance(self.feature_version, int):
            raise StoreError(
                f"SampleRow.feature_version = {self.feature_version!r}: expected an integer"
            )
        if self.event is not None:
            check_text("SampleRow", "event", self.event)
            if self.source != "archive":
                raise StoreError(
                    f"SampleRow.event = {self.event!r} on a {self.source} sample: only archive "
                    "samples carry an event name"
                )
        import numpy as np

        try:
            vector = np.array(self.features, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"SampleRow.features: expected numbers ({exc})") from None
        if vector.ndim != 1 or vector.size == 0:
            raise StoreError(
                f"SampleRow.features has shape {vector.shape}: expected a non-empty 1-D vector"
            )
        vector.flags.writeable = False
        object.__setattr__(self, "features", vector)
        object.__setattr__(self, "weight", float(self.weight) + 0.0)  # a plain float, never -0.0

    @classmethod
    def unchecked(
        cls,
        symbol: str,
        ts: str,
        source: Source,
        regime: str,
        weight: float,
        label: int | None,
        features: npt.NDArray[np.float32],
        feature_version: int,
    ) -> SampleRow:
        """A sample without the constructor's checks and copy, for values valid by
        construction: `features` must already be a read-only 1-D float32 vector and `weight` a
        plain float (the pipeline's samples)."""
        return _unchecked(
            cls,
            {
                "symbol": symbol,
                "ts": ts,
                "source": source,
                "regime": regime,
                "weight": weight,
                "label": label,
                "features": features,
                "feature_version": feature_version,
                "event": None,
            },
        )


@dataclass(frozen=True)
class LabelUpdate:
    """The label of a pending sample, known once its future bar has arrived."""

    symbol: str
    ts: str
    source: Source
    label: int

    def __post_init__(self) -> None:
        check_day("LabelUpdate", self.ts)
        check_source("LabelUpdate", self.source)
        if self.label is None:
            raise StoreError("LabelUpdate.label = None: expected 0 or 1")
        check_label("LabelUpdate", self.label)

    @classmethod
    def unchecked(cls, symbol: str, ts: str, source: Source, label: int) -> LabelUpdate:
        """An update without the constructor's checks, for values valid by construction."""
        return _unchecked(cls, {"symbol": symbol, "ts": ts, "source": source, "label": label})


@dataclass
class RowBlock:
    """Rows already in the store's statement order, as the pipeline's bank writes them (one
    tuple per row costs a fraction of a row object): `bars` in `BarRow` field order, `samples`
    as (source, symbol, ts, regime, weight, label, event, feature_version, little-endian
    float32 feature bytes), `labels` as (source, symbol, ts, label). Valid by construction:
    `Store.write_batch` takes them as they are."""

    bars: list[tuple[Any, ...]] = field(default_factory=list)
    samples: list[tuple[Any, ...]] = field(default_factory=list)
    labels: list[tuple[str, str, str, int]] = field(default_factory=list)

    def bar_rows(self) -> list[BarRow]:
        return [BarRow.unchecked(*row) for row in self.bars]

    def sample_rows(self) -> list[SampleRow]:
        import numpy as np

        rows = []
        for source, symbol, ts, regime, weight, label, _, version, vector in self.samples:
            features = np.frombuffer(vector, dtype="<f4")
            rows.append(
                SampleRow.unchecked(symbol, ts, source, regime, weight, label, features, version)
            )
        return rows

    def label_updates(self) -> list[LabelUpdate]:
        return [
            LabelUpdate.unchecked(sym, ts, cast(Source, src), label)
            for src, sym, ts, label in self.labels
        ]


@dataclass(frozen=True)
class PredictionRow:
    """What a model said about one symbol and day; `label` is filled in when it is known."""

    symbol: str
    ts: str
    model_version: str
    proba: float
    prediction: int
    regime: str | None = None
    label: int | None = None

    def __post_init__(self) -> None:
        check_text("PredictionRow", "symbol", self.symbol)
        check_day("PredictionRow", self.ts)
        check_text("PredictionRow", "model_version", self.model_version)
        check_finite("PredictionRow", "proba", self.proba)
        check_regime("PredictionRow", self.regime, optional=True)
        check_label("PredictionRow", self.label)


@dataclass(frozen=True)
class Batch:
    """What one poll commits together, in one store transaction: the rows the pipeline made
    of its bars (`bars`, `samples`, `labels` as row objects, `block` as statement
    parameters), the champion's `predictions`, the poll's Kafka `offsets` ((topic, partition)
    -> the next offset to consume), the `dead_letters` the dead-letter topic did not take, and
    the increments of the store's named `counters`, and the `outbox` records for the output
    topics. The offsets are committed to Kafka only once the store holds the batch."""

    offsets: dict[tuple[str, int], int]
    bars: list[BarRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    labels: list[LabelUpdate] = field(default_factory=list)
    block: RowBlock = field(default_factory=RowBlock)
    predictions: list[PredictionRow] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)


class Backoff:
    """Capped exponential backoff, the pause before the next attempt of something that failed
    (a broker that does not answer, a dead-letter topic that refuses, a champion artifact that
    is refused): `initial_s`, doubled at every `next()`, at most `cap_s`;
    `reset()` after a success."""

    def __init__(self, initial_s: float = 1.0, cap_s: float = 30.0) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.attempts = 0

    def next(self) -> float:
        """The pause before the next attempt (counts this one)."""
        delay = min(self.cap_s, self.initial_s * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
