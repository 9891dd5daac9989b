from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.events import REASONS, BarEvent, EventRejected, decode_event

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
    change = draw(st.integers(min_value=0, max_value=9))
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
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return (lead + json.dumps(payload, separators=separators) + trail).encode(), key


def checked(raw: bytes, key: bytes | None):
    """What the field-by-field path alone gives for a record: a bar or a reason."""
    from consumers.events import _checked_bar

    try:
        return _checked_bar(json.loads(raw.decode("utf-8")), key, NOW)
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
