from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
from decimal import Decimal, localcontext

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import events
from consumers.events import (
    MAX_PAYLOAD_BYTES,
    REASONS,
    BarEvent,
    DecodedBatch,
    decode_batch,
    decode_event,
)
from consumers.replay import synthetic_events
from daemon.config import EventsConfig
from daemon.errors import EventRejected

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
GOOD = {
    "symbol": "SPY",
    "ts": "2020-03-23",
    "open": 228.19,
    "high": 229.68,
    "low": 218.26,
    "close": 222.95,
    "volume": 3.5e8,
}


def encode(payload) -> bytes:
    return json.dumps(payload).encode()


def reason_of(raw: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(EventRejected) as info:
        decode_event(raw, key, now=NOW)
    assert info.value.reason in REASONS
    return info.value.reason


def test_a_good_event_decodes():
    bar = decode_event(encode(GOOD), b"SPY", now=NOW)
    assert bar == BarEvent("SPY", dt.date(2020, 3, 23), 228.19, 229.68, 218.26, 222.95, 3.5e8)
    assert bar.ts == "2020-03-23"
    assert decode_event(bar.to_json(), now=NOW) == bar


@pytest.mark.parametrize(
    ("ts", "day"),
    [
        ("2020-03-23", dt.date(2020, 3, 23)),
        ("2020-03-23T16:00:00-04:00", dt.date(2020, 3, 23)),
        ("2020-03-23T23:30:00-04:00", dt.date(2020, 3, 23)),  # the exchange's own day
        ("2020-03-23T16:00:00Z", dt.date(2020, 3, 23)),
        ("2020-03-23 00:00:00", dt.date(2020, 3, 23)),
        (1584921600000, dt.date(2020, 3, 23)),  # epoch ms, UTC
        (1584921600000.0, dt.date(2020, 3, 23)),
    ],
)
def test_ts_forms(ts, day):
    assert decode_event(encode({**GOOD, "ts": ts}), now=NOW).day == day


def test_vix_and_other_symbol_shapes_are_accepted():
    for symbol in ("^VIX", "BRK.B", "ES=F", "EURUSD=X", "BTC-USD", "A"):
        assert decode_event(encode({**GOOD, "symbol": symbol}), now=NOW).symbol == symbol


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({k: v for k, v in GOOD.items() if k != "close"}, "missing_field"),
        ({k: v for k, v in GOOD.items() if k != "ts"}, "missing_field"),
        ({k: v for k, v in GOOD.items() if k != "symbol"}, "missing_field"),
        ({**GOOD, "close": "222.95"}, "bad_type"),
        ({**GOOD, "close": True}, "bad_type"),
        ({**GOOD, "close": None}, "bad_type"),
        ({**GOOD, "symbol": 5}, "bad_type"),
        ({**GOOD, "close": 0}, "non_positive_price"),
        ({**GOOD, "low": -1.0}, "non_positive_price"),
        ({**GOOD, "high": 220.0}, "high_below_open_close"),
        ({**GOOD, "low": 225.0}, "low_above_open_close"),
        ({**GOOD, "volume": -1}, "negative_volume"),
        ({**GOOD, "ts": "23/03/2020"}, "bad_ts"),
        ({**GOOD, "ts": True}, "bad_ts"),
        ({**GOOD, "ts": [2020]}, "bad_ts"),
        ({**GOOD, "ts": 10**20}, "bad_ts"),
        ({**GOOD, "ts": "2026-11-28"}, "future_ts"),
        ({**GOOD, "symbol": "spy"}, "bad_symbol"),
        ({**GOOD, "symbol": "A" * 17}, "bad_symbol"),
        ({**GOOD, "symbol": ""}, "bad_symbol"),
        ({**GOOD, "interval": "1m"}, "bad_interval"),
        ({**GOOD, "ts": "0001-01-01"}, "ts_before_min_date"),
        ({**GOOD, "ts": "1899-12-31"}, "ts_before_min_date"),
        ({**GOOD, "ts": "1899-12-31T23:59:59+00:00"}, "ts_before_min_date"),
        ({**GOOD, "ts": -2208988800001}, "ts_before_min_date"),  # epoch ms, 1899-12-31
        ({**GOOD, "high": 1e300}, "price_above_max"),
        ({**GOOD, "open": 2e9, "high": 2e9, "close": 2e9}, "price_above_max"),
        ({**GOOD, "high": 1000000001}, "price_above_max"),
        ([GOOD], "not_an_object"),
        ("SPY", "not_an_object"),
    ],
)
def test_each_schema_violation_has_its_reason(payload, reason):
    assert reason_of(encode(payload)) == reason


def test_non_finite_numbers_in_json_are_rejected():
    raw = encode(GOOD).replace(b"222.95", b"NaN")
    assert reason_of(raw) == "non_finite"
    raw = encode(GOOD).replace(b"222.95", b"1e400")
    assert reason_of(raw) == "non_finite"


def test_bytes_level_problems():
    assert reason_of(b"\xff\xfe{") == "undecodable"
    assert reason_of(b"{not json") == "not_json"
    assert reason_of(None) == "not_json"
    big = encode({**GOOD, "pad": "x" * (64 * 1024)})
    assert reason_of(big) == "too_large"
    assert reason_of(b"[" * 100000 + b"]" * 100000) == "too_large"
    assert reason_of(b"[" * 30000 + b"]" * 30000) in ("not_json", "not_an_object")
    # Python refuses to convert an integer of more than 4,300 digits (a ValueError, not a
    # JSONDecodeError): a rejected record, not a crash of the consumer.
    assert reason_of(encode(GOOD).replace(b"222.95", b"1" * 5000)) == "not_json"


def test_key_must_match_the_symbol():
    assert reason_of(encode(GOOD), key=b"QQQ") == "key_mismatch"


def test_messages_name_the_field_and_value():
    with pytest.raises(EventRejected, match=r"field 'close' = '222.95': expected a number"):
        decode_event(encode({**GOOD, "close": "222.95"}), now=NOW)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def hostile_payloads(draw):
    kind = draw(st.integers(min_value=0, max_value=3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    payload = dict(GOOD)
    for name in draw(st.lists(st.sampled_from([*GOOD, "interval"]), max_size=3, unique=True)):
        if draw(st.booleans()):
            payload.pop(name, None)
        else:
            payload[name] = draw(json_values)
    return json.dumps(payload).encode()


@settings(max_examples=2000, deadline=None)
@given(hostile_payloads())
def test_hostile_payloads_decode_or_are_rejected_with_a_known_reason(raw):
    try:
        bar = decode_event(raw, now=NOW)
    except EventRejected as exc:
        assert exc.reason in REASONS
        assert exc.detail
    else:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low > 0 and bar.volume >= 0


TS_VALUES = (
    "2020-03-23",
    "1900-01-01",  # events.min_date
    "1899-12-31",
    "0001-01-01",
    "2026-11-27",
    "2026-11-28",  # more than a day after NOW
    "2020-W13-1",  # an ISO week date, also 10 characters
    "20200323",
    "2020-03-23T23:30:00-04:00",
    "2020-02-30",
    1584921600000,
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-3, max_value=1e6),
    st.integers(min_value=-5, max_value=10**6),
)


@st.composite
def bar_payloads(draw):
    """Valid records, encoded in the ways producers might, and records one change away from
    valid: the fast path and the field-by-field checks must agree on every one of them."""
    positive = st.floats(min_value=1e-3, max_value=1e6)
    low, a, b, high = sorted(draw(st.lists(positive, min_size=4, max_size=4)))
    payload = {
        "symbol": draw(st.sampled_from(["SPY", "^VIX", "BRK.B"])),
        "ts": "2020-03-23",
        "open": a,
        "high": high,
        "low": low,
        "close": b,
        "volume": draw(st.floats(min_value=0.0, max_value=1e12)),
    }
    if draw(st.booleans()):
        payload["interval"] = "1d"
    key = draw(st.sampled_from([None, payload["symbol"].encode()]))
    lead = trail = ""
    change = draw(st.integers(min_value=0, max_value=10))
    if change == 1:
        name = draw(st.sampled_from(sorted(payload)))
        payload[name] = draw(st.one_of(numbers, st.sampled_from(TS_VALUES), st.none()))
    elif change == 2:
        del payload[draw(st.sampled_from(sorted(payload)))]
    elif change == 3:
        payload["ts"] = draw(st.sampled_from(TS_VALUES))
    elif change == 4:
        payload["symbol"] = draw(st.sampled_from(["spy", "A" * 17, "", "SPY\n"]))
    elif change == 5:
        payload["interval"] = draw(st.sampled_from(["1m", None, 1]))
    elif change == 6:
        key = b"QQQ"
    elif change == 7:
        lead, trail = draw(st.sampled_from([(" ", ""), ("", "\n"), ("", "x"), ("\ufeff", "")]))
    elif change == 8:
        for name in ("open", "high", "low", "close"):
            payload[name] = draw(positive)
    elif change == 9:  # around events.max_price
        top = draw(st.sampled_from([1e9, math.nextafter(1e9, math.inf), 1e300, 1.5e308]))
        payload["high"] = top
        if draw(st.booleans()):
            payload["close"] = payload["open"] = top
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return (lead + json.dumps(payload, separators=separators) + trail).encode(), key


def checked(raw: bytes, key: bytes | None):
    """What the field-by-field path alone gives for a record: a bar or a reason."""
    from consumers.events import _checked_bar

    try:
        return _checked_bar(json.loads(raw.decode("utf-8")), key, NOW, *events._bounds(None))
    except (ValueError, EventRejected) as exc:
        return exc.reason if isinstance(exc, EventRejected) else "not_json"


@settings(max_examples=3000, deadline=None)
@given(bar_payloads())
def test_the_fast_path_agrees_with_the_field_by_field_checks(record):
    raw, key = record
    try:
        got = decode_event(raw, key, now=NOW)
    except EventRejected as exc:
        got = exc.reason
    want = checked(raw, key)
    assert got == want
    if isinstance(got, BarEvent):
        assert [type(x) for x in vars(got).values()] == [type(x) for x in vars(want).values()]


# --- decode_batch: the same decisions as decode_event, record by record -------------------


def bits(x: float) -> bytes:
    """A float's exact bits (tells -0.0 from 0.0, which == does not)."""
    return struct.pack("<d", x)


def assert_batch_agrees(records, now=NOW, bounds=None):
    """decode_batch(records) gives, for every record, what decode_event gives for it."""
    batch = decode_batch(records, now, bounds)
    valid, rejected = [], []
    for i, (key, value) in enumerate(records):
        try:
            bar = decode_event(value, key, now, bounds)
        except EventRejected as exc:
            rejected.append((i, exc.reason, exc.detail))
        else:
            valid.append((i, bar))
    assert batch.index == [i for i, _ in valid]
    assert [(i, exc.reason, exc.detail) for i, exc in batch.rejected] == rejected
    assert all(isinstance(exc, EventRejected) for _, exc in batch.rejected)
    assert sorted([*batch.index, *(i for i, _ in batch.rejected)]) == list(range(len(records)))
    assert len(batch) == len(valid)
    columns = ("symbols", "ts", "days", "open", "high", "low", "close", "volume")
    assert {name: len(getattr(batch, name)) for name in columns} == dict.fromkeys(
        columns, len(valid)
    )
    for k, (_, bar) in enumerate(valid):
        assert type(batch.symbols[k]) is str and batch.symbols[k] == bar.symbol
        assert type(batch.days[k]) is dt.date and batch.days[k] == bar.day
        assert batch.ts[k] == bar.ts == bar.day.isoformat()
        for name in ("open", "high", "low", "close", "volume"):
            got, want = getattr(batch, name)[k], getattr(bar, name)
            assert type(got) is float and type(want) is float, (name, got, want)
            assert bits(got) == bits(want), (name, got.hex(), want.hex())
    assert batch.bars() == [bar for _, bar in valid]
    return batch


def payload_text(fields, separators=(",", ":")):
    """A JSON object from (name, JSON text of the value) pairs, names written as given."""
    item, colon = separators
    return "{" + item.join(f"{json.dumps(name)}{colon}{text}" for name, text in fields) + "}"


def float_texts(x: float):
    """JSON texts of numbers at or next to x: short, exact, long and halfway forms, all of
    which the two parsers must round to the same double."""
    up = math.nextafter(x, math.inf)
    with localcontext() as ctx:
        ctx.prec = 1200
        half = (Decimal(x) + Decimal(up)) / 2
    texts = st.sampled_from(
        [
            repr(x),
            f"{x:.17g}",
            f"{x:.25e}",
            f"{x:.17E}",
            format(Decimal(x), "f"),
            format(half, "f"),
            format(half, "f") + "0000000001",
            format(half, "e"),
        ]
    )
    truncated = st.integers(min_value=3, max_value=40).map(lambda n: format(half, "f")[:n])
    return st.one_of(texts, truncated.filter(lambda t: not t.endswith(".")))


SYMBOLS = ["SPY", "^VIX", "BRK.B", "ES=F", "A", "SYN00001", "SPY\n", "spy", "ÅPY", ""]
PLAIN_TS = ["2020-03-23", "2000-01-03", "2026-11-27", "2026-11-28", "2020-W13-1", "2020-02-30"]
OTHER_TS = [
    "2020-03-23T16:00:00-04:00",
    "2020-03-23T23:30:00-04:00",
    "2026-11-27T23:00:00-05:00",
    "2020-03-23 00:00:00",
    "20200323",
    1584921600000,
    1584921600000.0,
    -(10**20),
    True,
    None,
]
HOSTILE_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "-1e-400",
    "-0",
    "-0.0",
    "-1.0",
    "-1",
    "0.0",
    "1E5",
    "100000",
    str(2**64),
    str(2**64 - 1),
    str(-(2**63) - 1),
    str((2**53 + 1) * 2**20),  # an integer halfway between two doubles
    "1" * 30,
    "1" * 400,  # an integer beyond the float range
    "1" * 5000,  # beyond Python's int-from-string limit
    "4.9e-324",
    "01",
    "1.",
    ".5",
    "+1",
    "true",
    "null",
    '"1.5"',
]


@st.composite
def plain_records(draw):
    """The producers' form, written by hand: float texts of every shape, field order, spacing,
    escaped names, an interval or not, extra fields now and then."""
    positive = st.floats(min_value=1e-300, max_value=1e300)
    low, a, b, high = sorted(draw(st.lists(positive, min_size=4, max_size=4)))
    if draw(st.booleans()):  # prices near each other: ties and next doubles
        low, a, b, high = sorted([a, math.nextafter(a, 0.0), a, math.nextafter(a, math.inf)])
    symbol = draw(st.sampled_from(SYMBOLS[:7]) | st.sampled_from(SYMBOLS))
    values = {"open": a, "high": high, "low": low, "close": b}
    fields = [(name, draw(float_texts(x))) for name, x in values.items()]
    volume = draw(st.sampled_from([0.0, 1.0, 3.5e8]) | st.floats(min_value=0.0, max_value=1e15))
    fields.append(("volume", draw(float_texts(volume) | st.sampled_from(["-0.0", "0.0"]))))
    fields.append(("symbol", json.dumps(symbol, ensure_ascii=draw(st.booleans()))))
    fields.append(("ts", json.dumps(draw(st.sampled_from(PLAIN_TS)))))
    if draw(st.booleans()):
        fields.append(("interval", '"1d"'))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        fields.append(("note", json.dumps(draw(json_values))))
    fields = draw(st.permutations(fields))
    text = payload_text(fields, draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :")])))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        text = text.replace('"close"', '"\\u0063lose"').replace('"ts"', '"t\\u0073"')
    lead, trail = draw(st.sampled_from([("", ""), ("", ""), (" \t", "\r\n"), ("\n", " ")]))
    key = draw(st.sampled_from([None, symbol.encode(), symbol.encode(), b"QQQ", b""]))
    return key, (lead + text + trail).encode()


@st.composite
def other_records(draw):
    """Valid and invalid records in the other forms: integers, ISO timestamps, epoch ms,
    intervals and extra fields, with Python's own NaN and Infinity output now and then."""
    payload: dict = dict(GOOD)
    payload["symbol"] = draw(st.sampled_from(SYMBOLS))
    for name in NUMBER_NAMES:
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            payload[name] = draw(
                st.sampled_from([0, 1, -1, 300, 10**6, 10**20, 2**64, math.nan, math.inf])
                | st.integers()
                | st.floats()
            )
    if draw(st.booleans()):
        payload["ts"] = draw(st.sampled_from(OTHER_TS + PLAIN_TS))
    if draw(st.booleans()):
        payload["interval"] = draw(st.sampled_from(["1d", "1d", "1m", None, 1, ["1d"]]))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        payload[draw(st.sampled_from(["extra", "symbol", "ts", "close"]))] = draw(json_values)
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        del payload[draw(st.sampled_from(sorted(payload)))]
    key = draw(st.sampled_from([None, str(payload.get("symbol", "")).encode(), b"QQQ"]))
    return key, json.dumps(payload).encode()


NUMBER_NAMES = ("open", "high", "low", "close", "volume")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def mutated_records(draw):
    """A record in the producers' form with one hostile change at the level of the text:
    where orjson and `json` could part ways (duplicate names, nesting deeper than `json`'s
    recursion limit but within orjson's, NaN, big and long numbers, surrogates, control
    characters, a byte order mark, bytes that are not UTF-8) and the size limit."""
    key, raw = draw(plain_records())
    text = raw.decode()
    change = draw(st.integers(min_value=0, max_value=8))
    if change == 0:  # a number replaced by a hostile one
        name = draw(st.sampled_from(NUMBER_NAMES))
        number = draw(st.sampled_from(HOSTILE_NUMBERS))
        text = re.sub(rf'("{name}"\s*:\s*)[^,}}\s]+', lambda m: m.group(1) + number, text)
    elif change == 1:  # a duplicate name, before (the original wins) or after (it wins)
        name = draw(st.sampled_from([*NUMBER_NAMES, "symbol", "ts", "interval"]))
        value = draw(
            st.sampled_from(HOSTILE_NUMBERS)
            | st.sampled_from(['"SPY"', '"2020-03-23"', '"1d"', '"\\ud800"', "1.5", "300.0"])
            | st.sampled_from([nested(3), nested(990), nested(1000), nested(1023), nested(1030)])
            | st.sampled_from(["{}", '{"a":1}', "[1.5]"])
        )
        if draw(st.booleans()):
            text = "{" + json.dumps(name) + ":" + value + "," + text.strip()[1:]
        else:
            text = text.strip()[:-1] + "," + json.dumps(name) + ":" + value + "}"
    elif change == 2:  # deep nesting in an extra field
        depth = draw(st.sampled_from([1, 50, 990, 1000, 1022, 1023, 1024, 1100]))
        text = text.strip()[:-1] + ',"extra":' + nested(depth) + "}"
    elif change == 3:  # a lone surrogate, escaped, in a string
        text = text.replace('"symbol":"', '"symbol":"\\udc00', 1).replace(
            '"1d"', draw(st.sampled_from(['"1d\\ud800"', '"1d"']))
        )
        text = text.strip()[:-1] + ',"note":"\\ud800"}'
    elif change == 4:  # a raw control character in a string
        char = draw(st.sampled_from(["\n", "\t", "\x00", "\x1f", "\x7f"]))
        text = text.replace('"1d"', f'"1d{char}"').replace('"symbol', f'"sym{char}bol')
    elif change == 5:  # bytes that are not (or not only) ASCII
        prefix = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf"]))
        where = draw(st.sampled_from(["start", "string", "end"]))
        raw = text.encode()
        if where == "start":
            return key, prefix + raw
        if where == "string":
            return key, raw.replace(b'"ts"', b'"t' + prefix + b's"', 1)
        return key, raw + prefix
    elif change == 6:  # just within or beyond the size limit
        size = draw(st.sampled_from([MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES + 1]))
        text = text + " " * max(0, size - len(text.encode()))
    elif change == 7:  # trailing content, or a second document
        text += draw(st.sampled_from(["x", "{}", ",", "\x0c", "\xa0", " // c"]))
    else:  # key / symbol disagreements
        key = draw(st.sampled_from([b"QQQ", b"SPY\n", b"spy", "SPY", None]))
    return key, text.encode()


SYNTHETIC = list(synthetic_events(4, n_days=30, seed=7))


any_record = st.one_of(
    st.builds(lambda bar: (bar.symbol.encode(), bar.to_json()), st.sampled_from(SYNTHETIC)),
    plain_records(),
    other_records(),
    mutated_records(),
    bar_payloads().map(lambda record: (record[1], record[0])),
    st.tuples(st.sampled_from([None, b"SPY"]), hostile_payloads()),
    st.tuples(st.sampled_from([None, b"SPY"]), st.none()),
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_record, max_size=20))
def test_decode_batch_agrees_with_decode_event_on_every_record(records):
    assert_batch_agrees(records)


LATER = dt.datetime(2026, 11, 27, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))


@settings(max_examples=200, deadline=None)
@given(st.lists(mutated_records(), min_size=1, max_size=8), st.sampled_from([NOW, LATER]))
def test_decode_batch_agrees_on_hostile_text_at_another_time(records, now):
    assert_batch_agrees(records, now)


def test_decode_batch_on_the_producers_payloads():
    bars = list(synthetic_events(20, n_days=50, seed=3))
    assert len(bars) == 21 * 50  # 20 symbols and the VIX
    records = [(bar.symbol.encode(), bar.to_json()) for bar in bars]
    batch = assert_batch_agrees(records)
    assert len(batch) == len(records) and not batch.rejected
    assert batch.bars() == bars
    assert batch.ts == [bar.day.isoformat() for bar in bars]


def test_the_producers_payloads_take_the_fast_path(monkeypatch):
    """No producer record goes to decode_event; every hostile one does."""
    calls = []

    def counting(raw, key=None, now=None, bounds=None):
        calls.append(raw)
        return decode_event(raw, key, now, bounds)

    monkeypatch.setattr(events, "decode_event", counting)
    bars = list(synthetic_events(5, n_days=20, seed=2))
    good = [(bar.symbol.encode(), bar.to_json()) for bar in bars]
    assert len(decode_batch(good, NOW)) == len(good)
    assert calls == []
    spaced = [(None, json.dumps(json.loads(raw), indent=1).encode()) for _, raw in good]
    assert len(decode_batch(spaced, NOW)) == len(good)
    assert calls == []
    hostile = [
        (None, encode(GOOD).replace(b"}", b',"close":' + nested(1000).encode() + b',"close":1.0}'))
    ]
    decode_batch(hostile, NOW)
    assert calls == [hostile[0][1]]


def test_orjson_and_json_part_ways_where_the_fast_path_does_not_go():
    """The cases the fast path's guards exist for: each is a record orjson reads and `json`
    refuses or reads otherwise, and decode_batch decides it as decode_event does."""
    good = encode({**GOOD, "close": 223.0})
    deep = good.replace(b'"close"', b'"close": ' + nested(1000).encode() + b', "close"')
    assert orjson.loads(deep)["close"] == 223.0
    with pytest.raises(RecursionError):
        json.loads(deep)
    huge = good.replace(b"350000000.0", str(10**400).encode())  # an int `json` reads, float can't
    big = good.replace(b"350000000.0", str(2**64).encode())  # orjson: a float, json: an int
    assert type(orjson.loads(big)["volume"]) is float and type(json.loads(big)["volume"]) is int
    surrogate = good.replace(b'"SPY"', b'"SPY", "note": "\\ud800"')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(surrogate)
    nan = good.replace(b"223.0", b"NaN")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(nan)
    records = [(b"SPY", raw) for raw in (good, deep, huge, big, surrogate, nan)]
    batch = assert_batch_agrees(records)
    assert batch.index == [0, 3, 4]
    assert [(i, exc.reason) for i, exc in batch.rejected] == [
        (1, "not_json"),
        (2, "non_finite"),
        (5, "non_finite"),
    ]
    assert batch.volume[1] == float(2**64)


def test_an_integer_beyond_the_float_range_is_rejected_not_a_crash():
    raw = encode({**GOOD, "volume": 10**400})
    assert reason_of(raw) == "non_finite"
    with pytest.raises(EventRejected, match=r"field 'volume' = 10{59}: expected a finite"):
        decode_event(raw, now=NOW)


def test_each_reason_in_one_batch():
    records = [
        (None, None),  # not_json
        (None, encode({**GOOD, "pad": "x" * MAX_PAYLOAD_BYTES})),  # too_large
        (None, b'{"symbol": "\xff"}'),  # undecodable
        (None, b"[]"),  # not_an_object
        (None, encode({k: v for k, v in GOOD.items() if k != "low"})),  # missing_field
        (None, encode({**GOOD, "open": "1"})),  # bad_type
        (None, encode({**GOOD, "symbol": "spy"})),  # bad_symbol
        (b"QQQ", encode(GOOD)),  # key_mismatch
        (None, encode({**GOOD, "ts": "2020-02-30"})),  # bad_ts
        (None, encode({**GOOD, "ts": "2026-11-28"})),  # future_ts
        (None, encode({**GOOD, "interval": "1m"})),  # bad_interval
        (None, encode({**GOOD, "close": math.inf})),  # non_finite
        (None, encode({**GOOD, "low": 0.0})),  # non_positive_price
        (None, encode({**GOOD, "high": 1.0})),  # high_below_open_close
        (None, encode({**GOOD, "low": 300.0, "high": 400.0})),  # low_above_open_close
        (None, encode({**GOOD, "volume": -1.0})),  # negative_volume
        (None, encode({**GOOD, "ts": "0001-01-01"})),  # ts_before_min_date
        (None, encode({**GOOD, "high": 1e300})),  # price_above_max
        (b"SPY", encode(GOOD)),
        (None, encode({**GOOD, "ts": "2026-11-27"})),  # the latest day allowed
    ]
    batch = assert_batch_agrees(records)
    assert [exc.reason for _, exc in batch.rejected] == [
        "not_json",
        "too_large",
        "undecodable",
        *REASONS[3:],
    ]
    assert batch.index == [18, 19]
    assert batch.days == [dt.date(2020, 3, 23), dt.date(2026, 11, 27)]


def test_a_week_date_is_stored_as_its_calendar_day():
    batch = assert_batch_agrees([(b"SPY", encode({**GOOD, "ts": "2020-W13-1"}))] * 3)
    assert batch.ts == ["2020-03-23"] * 3 and batch.days == [dt.date(2020, 3, 23)] * 3


def test_an_empty_batch_and_the_helpers():
    empty = decode_batch([], NOW)
    assert len(empty) == 0 and empty.bars() == [] and empty.rejected == []
    batch = decode_batch([(None, b"{"), (b"SPY", encode(GOOD))])
    assert isinstance(batch, DecodedBatch) and len(batch) == 1
    assert batch.bars() == [decode_event(encode(GOOD), b"SPY")]
    assert batch.index == [1] and batch.rejected[0][0] == 0


def test_a_naive_now_fails_as_decode_event_does():
    naive = dt.datetime(2026, 11, 26, 12, 0)
    with pytest.raises(TypeError):
        decode_event(encode(GOOD), now=naive)
    with pytest.raises(TypeError):
        decode_batch([(None, encode(GOOD))], naive)


def test_the_symbol_cache_stays_bounded_and_right(monkeypatch):
    monkeypatch.setattr(events, "_SYMBOL_BYTES", {})
    monkeypatch.setattr(events, "_SYMBOL_CACHE_SIZE", 2)
    symbols = ["SPY", "spy", "QQQ", "SPY", "A" * 17, "QQQ", "IWM", "spy", "SPY"]
    records = [(None, encode({**GOOD, "symbol": symbol})) for symbol in symbols]
    batch = assert_batch_agrees(records * 2)
    assert batch.symbols == ["SPY", "QQQ", "SPY", "QQQ", "IWM", "SPY"] * 2
    assert 0 < len(events._SYMBOL_BYTES) <= 2


def test_the_size_limit_holds_for_a_record_of_the_producers_form():
    raw = BarEvent("SPY", dt.date(2020, 3, 23), 1.5, 2.0, 1.0, 1.5, 10.0).to_json()
    at_limit = raw + b" " * (MAX_PAYLOAD_BYTES - len(raw))
    records = [(b"SPY", at_limit), (b"SPY", at_limit + b" "), (b"SPY", b"\n" + at_limit)]
    batch = assert_batch_agrees(records)
    assert batch.index == [0]
    assert [(i, exc.reason) for i, exc in batch.rejected] == [(1, "too_large"), (2, "too_large")]


def test_the_plausibility_bounds_hold_on_both_paths_and_follow_the_configuration():
    """Implausible bars (year 0001, a price of 1e300) are rejected with reasons of their own,
    the bounds themselves are plausible, and `[events]` moves them."""
    at_bounds = [
        (b"SPY", encode({**GOOD, "ts": "1900-01-01"})),
        (b"SPY", encode({**GOOD, "high": 1e9})),
        (b"SPY", encode({**GOOD, "open": 1e9, "high": 1e9, "close": 1e9})),
    ]
    beyond = [
        (b"SPY", encode({**GOOD, "ts": "0001-01-01"})),
        (b"SPY", encode({**GOOD, "ts": "1899-12-31"})),
        (b"SPY", encode({**GOOD, "high": 1e300})),
        (b"SPY", encode({**GOOD, "high": math.nextafter(1e9, math.inf)})),
    ]
    batch = assert_batch_agrees(at_bounds + beyond)
    assert batch.index == [0, 1, 2]
    assert [(i, exc.reason) for i, exc in batch.rejected] == [
        (3, "ts_before_min_date"),
        (4, "ts_before_min_date"),
        (5, "price_above_max"),
        (6, "price_above_max"),
    ]
    assert "events.min_date 1900-01-01" in batch.rejected[0][1].detail
    assert "events.max_price 1000000000.0" in batch.rejected[2][1].detail
    strict = EventsConfig(min_date=dt.date(2020, 3, 24), max_price=229.0)
    batch = assert_batch_agrees([(b"SPY", encode(GOOD)), *at_bounds[:1]], bounds=strict)
    assert [exc.reason for _, exc in batch.rejected] == ["ts_before_min_date"] * 2
    moved = {**GOOD, "ts": "2020-03-24"}
    batch = assert_batch_agrees([(b"SPY", encode(moved))], bounds=strict)
    assert [exc.reason for _, exc in batch.rejected] == ["price_above_max"]
    loose = EventsConfig(min_date=dt.date(1, 1, 1), max_price=math.inf)
    batch = assert_batch_agrees(beyond, bounds=loose)
    assert batch.index == [0, 1, 2, 3] and batch.days[0] == dt.date(1, 1, 1)
