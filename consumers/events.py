"""The market-data event schema: decoding and validating one Kafka record into a daily bar.

An event is UTF-8 JSON, `{"symbol": "SPY", "ts": "2020-03-23" | ISO 8601 | epoch ms,
"open": f, "high": f, "low": f, "close": f, "volume": f}` with an optional `"interval": "1d"`.
Anything else is rejected with one reason code from `REASONS` (a bounded set, so it can be a
Prometheus label) and a detail that names the field and value.

`decode_event` decodes one record; `decode_batch` a batch of them, into columns, with the same
decision for every record, about three times as fast (orjson for the producers' own form).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.config import EventsConfig
from daemon.domain import REJECTION_REASONS, Bar
from daemon.errors import EventRejected

#: A validated event is a daemon `Bar`.
BarEvent = Bar

MAX_PAYLOAD_BYTES = 64 * 1024
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9^.=-]{1,16}$")
PRICE_FIELDS = ("open", "high", "low", "close")
NUMBER_FIELDS = (*PRICE_FIELDS, "volume")
SUPPORTED_INTERVALS = ("1d",)

#: Every reason an event can be rejected for (a bounded set: a metric label).
REASONS = REJECTION_REASONS

_DEFAULT_EVENTS = EventsConfig()


def _bounds(events: EventsConfig | None) -> tuple[dt.date, float]:
    """The first plausible day and the highest plausible price (finite: a bar within it has
    finite prices) of `events` (default: the built-in `[events]`)."""
    events = events or _DEFAULT_EVENTS
    return events.min_date, min(events.max_price, sys.float_info.max)


def _number(data: dict[str, Any], name: str) -> float:
    if name not in data:
        raise EventRejected("missing_field", f"field {name!r} is missing")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventRejected("bad_type", f"field {name!r} = {value!r:.60}: expected a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range, 10**309 say: not a crash
        number = _INF
    if not math.isfinite(number):
        raise EventRejected(
            "non_finite", f"field {name!r} = {value!r:.60}: expected a finite number"
        )
    return number


def parse_ts(value: Any, now: dt.datetime) -> dt.date:
    """The trading day of a `ts` value: a date, an ISO 8601 timestamp or epoch milliseconds.

    A timestamp with an offset is read in its own offset (the exchange's local day); epoch
    milliseconds are read in UTC. A day more than one day after `now` (UTC) is rejected.
    """
    if isinstance(value, bool):
        raise EventRejected("bad_ts", f"field 'ts' = {value!r}: expected a date or epoch ms")
    moment: dt.datetime
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError("not finite")
            moment = dt.datetime.fromtimestamp(value / 1000.0, tz=dt.UTC)
        elif isinstance(value, str) and len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        elif isinstance(value, str):
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
        else:
            raise ValueError("wrong type")
    except (ValueError, OverflowError, OSError):
        raise EventRejected(
            "bad_ts",
            f"field 'ts' = {value!r:.60}: expected YYYY-MM-DD, ISO 8601 or epoch milliseconds",
        ) from None
    if moment - now > dt.timedelta(days=1):
        raise EventRejected(
            "future_ts", f"field 'ts' = {value!r:.60} is more than a day after {now:%Y-%m-%d}"
        )
    return moment.date()


def decode_event(
    raw: bytes | None,
    key: bytes | None = None,
    now: dt.datetime | None = None,
    events: EventsConfig | None = None,
) -> BarEvent:
    """Decode and validate one record value (and its key, which must match the symbol).

    `now` (aware; default: the current time) bounds `ts`; a consumer passes one per batch.
    `events` (default: the built-in `[events]`) bounds `ts` from below and the prices.
    """
    if raw is None:
        raise EventRejected("not_json", "empty record (a tombstone)")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise EventRejected("too_large", f"{len(raw)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected("undecodable", f"not UTF-8 at byte {exc.start}") from None
    try:
        data = _loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of 4,301+ digits
        raise EventRejected("not_json", f"{exc}"[:120]) from None
    now = now or dt.datetime.now(dt.UTC)
    first, top = _bounds(events)
    bar = _plain_bar(data, key, first, _latest_day(now), top)
    return bar if bar is not None else _checked_bar(data, key, now, first, top)


_DECODER = json.JSONDecoder()


def _loads(text: str) -> Any:
    """`json.loads(text)`: the same scanner, called without the wrapper that only matters for
    surrounding whitespace and errors (which go to `json.loads` itself); twice as fast."""
    try:
        data, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        end = -1
    return data if end == len(text) else json.loads(text)


@functools.lru_cache(maxsize=4)
def _latest_day(now: dt.datetime) -> dt.date | None:
    """The last day a date-only `ts` may name: one day after `now`, as a UTC day."""
    if now.tzinfo is None:
        return None  # `parse_ts` decides (and fails)
    return (now + _ONE_DAY).astimezone(dt.UTC).date()


_ONE_DAY = dt.timedelta(days=1)
_INF = math.inf


def _plain_fields(
    symbol: Any, ts: Any, o: Any, h: Any, lo: Any, c: Any, v: Any, top: float
) -> bool:
    """Whether the fields are in the producers' own form (a str symbol, a 10-character ts,
    float prices and volume) with valid prices (none above `top`, a finite float) and volume:
    `_checked_bar`'s field rules for that form, in one expression."""
    return (
        type(symbol) is str
        and type(ts) is str
        and len(ts) == 10
        and type(o) is float
        and type(h) is float
        and type(lo) is float
        and type(c) is float
        and type(v) is float
        and 0.0 < o < _INF
        and 0.0 < c < _INF
        and (o if o > c else c) <= h <= top
        and 0.0 < lo <= (o if o < c else c)
        and 0.0 <= v < _INF
    )


def _plain_bar(
    data: Any, key: bytes | None, first: dt.date, latest: dt.date | None, top: float
) -> BarEvent | None:
    """The bar of a valid record in the producers' own form (a date string, float fields),
    or None for any other record, which `_checked_bar` then decodes or rejects with its reason.

    The same rules as `_checked_bar`, in one expression: most records take this path.
    """
    if type(data) is not dict or latest is None:
        return None
    # Any: `_plain_fields` checks their types.
    symbol: Any = data.get("symbol")
    ts: Any = data.get("ts")
    o: Any = data.get("open")
    h: Any = data.get("high")
    lo: Any = data.get("low")
    c: Any = data.get("close")
    v: Any = data.get("volume")
    if not (
        _plain_fields(symbol, ts, o, h, lo, c, v, top)
        and data.get("interval", "1d") in SUPPORTED_INTERVALS
        and SYMBOL_PATTERN.match(symbol)
        and (key is None or key == symbol.encode())
    ):
        return None
    try:
        day = dt.date.fromisoformat(ts)
    except ValueError:
        return None
    if day > latest or day < first:
        return None
    return BarEvent(symbol, day, o, h, lo, c, v)


def _checked_bar(
    data: Any, key: bytes | None, now: dt.datetime, first: dt.date, top: float
) -> BarEvent:
    """Validate a decoded record field by field; the first failure names the reason."""
    if not isinstance(data, dict):
        raise EventRejected("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    if "symbol" not in data:
        raise EventRejected("missing_field", "field 'symbol' is missing")
    symbol = data["symbol"]
    if not isinstance(symbol, str):
        raise EventRejected("bad_type", f"field 'symbol' = {symbol!r:.60}: expected a string")
    if not SYMBOL_PATTERN.match(symbol):
        raise EventRejected(
            "bad_symbol", f"field 'symbol' = {symbol!r:.60}: expected {SYMBOL_PATTERN.pattern}"
        )
    if key is not None and key != symbol.encode():
        raise EventRejected(
            "key_mismatch", f"record key {key[:40]!r} differs from symbol {symbol!r}"
        )
    if "ts" not in data:
        raise EventRejected("missing_field", "field 'ts' is missing")
    day = parse_ts(data["ts"], now)
    if day < first:
        raise EventRejected(
            "ts_before_min_date",
            f"field 'ts' = {data['ts']!r:.60} is before events.min_date {first.isoformat()}",
        )
    interval = data.get("interval", "1d")
    if interval not in SUPPORTED_INTERVALS:
        raise EventRejected(
            "bad_interval", f"field 'interval' = {interval!r:.40}: only daily bars ('1d')"
        )
    o, h, lo, c, v = (_number(data, name) for name in NUMBER_FIELDS)
    for name, value in zip(PRICE_FIELDS, (o, h, lo, c), strict=True):
        if value <= 0:
            raise EventRejected(
                "non_positive_price", f"field {name!r} = {value!r}: expected a price > 0"
            )
        if value > top:
            raise EventRejected(
                "price_above_max", f"field {name!r} = {value!r} is above events.max_price {top!r}"
            )
    if h < max(o, c):
        raise EventRejected(
            "high_below_open_close", f"high {h!r} is below max(open {o!r}, close {c!r})"
        )
    if lo > min(o, c):
        raise EventRejected(
            "low_above_open_close", f"low {lo!r} is above min(open {o!r}, close {c!r})"
        )
    if v < 0:
        raise EventRejected("negative_volume", f"field 'volume' = {v!r}: expected >= 0")
    return BarEvent(symbol, day, o, h, lo, c, v)


@dataclass
class DecodedBatch:
    """The records of one batch, decoded: the valid ones as columns (in record order, `index`
    naming each one's position in the batch) and the rejected ones with their rejection."""

    index: list[int] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    ts: list[str] = field(default_factory=list)  # the trading day, YYYY-MM-DD (`Bar.ts`)
    days: list[dt.date] = field(default_factory=list)
    open: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    rejected: list[tuple[int, EventRejected]] = field(default_factory=list)

    def __len__(self) -> int:
        """The number of valid records (the length of every column)."""
        return len(self.symbols)

    def bars(self) -> list[BarEvent]:
        """The valid records as bars, in record order."""
        return list(
            map(
                BarEvent,
                self.symbols,
                self.days,
                self.open,
                self.high,
                self.low,
                self.close,
                self.volume,
            )
        )


#: symbol -> `symbol.encode()` if it matches `SYMBOL_PATTERN`, else None: across batches,
#: which a consumer's poll makes small (a few hundred records, each symbol once).
_SYMBOL_BYTES: dict[str, bytes | None] = {}
_SYMBOL_CACHE_SIZE = 1 << 15


def decode_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    now: dt.datetime | None = None,
    events: EventsConfig | None = None,
) -> DecodedBatch:
    """Decode a batch of records, `(key, value)` pairs as Kafka gives them: record i is valid
    or rejected exactly as `decode_event(value, key, now, events)` decides, with the same
    values.

    `now` (aware; default: the current time) is read once for the batch. An exception other
    than `EventRejected` (as `decode_event` would raise it) propagates.

    The records in the producers' own form (see `_plain_bar`: the seven fields and perhaps
    `"interval": "1d"`, nothing else, a date string, float numbers) are parsed with orjson and
    checked in the loop below; every other record, and every record orjson refuses, goes to
    `decode_event`, which decides. Where orjson and `json` differ: orjson refuses NaN and
    Infinity, numbers beyond the float range and lone surrogates (so `decode_event` decides);
    reads an integer beyond 64 bits as a float (the one `float()` makes of `json`'s int); and
    takes arrays and objects nested up to 1023 deep, where `json` stops near its recursion
    limit: a record of the form has no nesting and no repeated name, which the fast path
    checks as one colon a field (the form's strings have no colon). The tests compare the
    two paths record by record.
    """
    now = now or dt.datetime.now(dt.UTC)
    latest = _latest_day(now)
    fast = latest is not None  # else `decode_event` decides (and fails: `now` is naive)
    bound = latest if latest is not None else dt.date.min
    first, top = _bounds(events)
    out = DecodedBatch()
    add_index, add_symbol, add_ts, add_day = (
        out.index.append,
        out.symbols.append,
        out.ts.append,
        out.days.append,
    )
    add_open, add_high, add_low, add_close, add_volume = (
        out.open.append,
        out.high.append,
        out.low.append,
        out.close.append,
        out.volume.append,
    )
    add_rejected = out.rejected.append
    days: dict[str, tuple[dt.date, str] | None] = {}  # ts -> (day, day.isoformat()) or None
    symbols = _SYMBOL_BYTES
    loads, load_error, plain, intervals = (
        orjson.loads,
        orjson.JSONDecodeError,
        _plain_fields,
        ("1d",),
    )
    limit, match, fromisoformat = MAX_PAYLOAD_BYTES, SYMBOL_PATTERN.match, dt.date.fromisoformat
    for i, (key, raw) in enumerate(records):
        # ASCII: valid UTF-8 without a byte order mark, as `decode_event` wants it too.
        if fast and type(raw) is bytes and len(raw) <= limit and raw.isascii():
            try:
                data = loads(raw)
                if type(data) is dict:
                    symbol = data["symbol"]
                    ts = data["ts"]
                    o = data["open"]
                    h = data["high"]
                    lo = data["low"]
                    c = data["close"]
                    v = data["volume"]
                else:
                    symbol = None
            except (load_error, KeyError):
                symbol = None
            if (
                symbol is not None  # else the fields of this record were not all read
                and plain(symbol, ts, o, h, lo, c, v, top)
                and ((n := len(data)) == 7 or (n == 8 and data.get("interval") in intervals))
                # One colon a field: no duplicate key, no nested object or array (which
                # `json` may refuse for its depth where orjson takes it).
                and raw.count(b":") == n
            ):
                if symbol in symbols:
                    symbol_bytes = symbols[symbol]
                else:
                    if len(symbols) >= _SYMBOL_CACHE_SIZE:
                        symbols.clear()
                    symbol_bytes = symbols[symbol] = symbol.encode() if match(symbol) else None
                if symbol_bytes is not None and (key is None or key == symbol_bytes):
                    if ts in days:
                        day = days[ts]
                    else:
                        try:
                            date = fromisoformat(ts)
                        except ValueError:
                            day = days[ts] = None
                        else:
                            day = days[ts] = (
                                (date, date.isoformat()) if first <= date <= bound else None
                            )
                    if day is not None:
                        add_index(i)
                        add_symbol(symbol)
                        add_day(day[0])
                        add_ts(day[1])
                        add_open(o)
                        add_high(h)
                        add_low(lo)
                        add_close(c)
                        add_volume(v)
                        continue
        try:
            bar = decode_event(raw, key, now, events)
        except EventRejected as exc:
            add_rejected((i, exc))
            continue
        add_index(i)
        add_symbol(bar.symbol)
        add_day(bar.day)
        add_ts(bar.ts)
        add_open(bar.open)
        add_high(bar.high)
        add_low(bar.low)
        add_close(bar.close)
        add_volume(bar.volume)
    return out
