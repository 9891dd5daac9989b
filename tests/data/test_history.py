from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "data"
YF_FILE = DATA / "yfinance_gspc_2018.csv"

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
GOOD_ROWS = [
    "2020-03-20,100,110,95,105,105,1000\n",
    "2020-03-23,105,106,90,92,92,2000\n",
    "2020-03-24,92,101,91,100,100,1500\n",
]


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def yfinance_download_frame(bars: pd.DataFrame, tickers: list[str]) -> pd.DataFrame:
    """What `yfinance.download(tickers)` returns, built the way yfinance's multi.py builds it."""
    frames = {}
    for t in tickers:
        df = bars.rename(columns=str.title)[["Open", "High", "Low", "Close", "Volume"]]
        df.index.name = "Date"
        frames[t] = df
    data = pd.concat(
        frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"]
    )
    data.columns = data.columns.swaplevel(0, 1)
    return data.sort_index(level=0, axis=1)


def test_bundled_histories_are_complete(sp500, nasdaq, vix):
    assert len(sp500) == len(nasdaq) == 5031
    assert sp500.index[0] == pd.Timestamp("1999-01-04")
    assert sp500.index[-1] == pd.Timestamp("2018-12-31")
    assert list(sp500.columns) == ["open", "high", "low", "close", "volume"]
    assert sp500.index.is_monotonic_increasing and sp500.index.is_unique
    assert vix.index[0] == pd.Timestamp("2014-01-03")
    assert vix.loc["2018-02-05"] == pytest.approx(37.32)
    # FRED marks holidays with "."; those rows are skipped, not read as numbers.
    with gzip.open(bundled_path("vix"), "rt") as handle:
        raw = handle.read().splitlines()
    assert len(vix) == len(raw) - 1 - sum(1 for line in raw if line.endswith(",."))


def test_saved_yfinance_export_reads_as_the_same_bars(sp500):
    bars = read_bars_csv(YF_FILE)
    expected = sp500.loc["2018"]
    pd.testing.assert_frame_equal(bars, expected, check_freq=False)


def test_yfinance_download_to_csv_round_trips(tmp_path, sp500):
    frame = yfinance_download_frame(sp500.iloc[:50], ["SPY"])
    path = tmp_path / "spy.csv"
    frame.to_csv(path)
    assert path.read_text().splitlines()[1].startswith("Ticker,SPY")
    pd.testing.assert_frame_equal(read_bars_csv(path), sp500.iloc[:50], check_freq=False)


def test_yfinance_group_by_ticker_layout(tmp_path, sp500):
    frame = yfinance_download_frame(sp500.iloc[:20], ["QQQ"])
    frame.columns = frame.columns.swaplevel(0, 1)
    frame.columns.names = ["Ticker", "Price"]
    path = tmp_path / "qqq.csv"
    frame.to_csv(path)
    pd.testing.assert_frame_equal(read_bars_csv(path), sp500.iloc[:20], check_freq=False)


def test_yfinance_several_tickers_in_one_file_is_an_error(tmp_path, sp500):
    path = tmp_path / "two.csv"
    yfinance_download_frame(sp500.iloc[:5], ["SPY", "QQQ"]).to_csv(path)
    with pytest.raises(DataError, match=r"two.csv, row 2: holds several tickers \(QQQ, SPY\)"):
        read_bars_csv(path)


def test_ticker_history_layout_with_offsets_and_extra_columns(tmp_path):
    text = (
        "Date,Open,High,Low,Close,Volume,Dividends,Stock Splits\n"
        "2020-03-20 00:00:00-04:00,100,110,95,105,1000,0.0,0.0\n"
        "2020-03-23 00:00:00-04:00,105,106,90,92,2000,0.0,0.0\n"
    )
    bars = read_bars_csv(write(tmp_path, text))
    assert list(bars.index.strftime("%Y-%m-%d")) == ["2020-03-20", "2020-03-23"]
    assert list(bars["close"]) == [105.0, 92.0]


def test_us_style_dates_of_the_bundled_files(tmp_path):
    text = "Date,Open,High,Low,Close,Adj Close,Volume\n1/4/1999,1,2,0.5,1.5,1.5,10\n"
    assert read_bars_csv(write(tmp_path, text)).index[0] == pd.Timestamp("1999-01-04")


def test_rows_yfinance_leaves_empty_are_skipped(tmp_path):
    text = HEADER + GOOD_ROWS[0] + "2020-03-21,,,,,,\n" + GOOD_ROWS[1]
    assert len(read_bars_csv(write(tmp_path, text))) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Date,Open,High,Low,Close\n2020-01-02,1,1,1,1\n",
            r"bars.csv, row 1: missing column 'Volume' \(columns found: date, open",
        ),
        (
            HEADER + GOOD_ROWS[0] + "2020-03-23,105,106,90,abc,92,2000\n",
            r"bars.csv, row 3, column Close: 'abc' is not a number",
        ),
        (
            HEADER + GOOD_ROWS[0] + "2020-03-23,105,106,90,-92,92,2000\n",
            r"bars.csv, row 3, column Close: price -92 is not positive",
        ),
        (
            HEADER + GOOD_ROWS[0] + "2020-03-23,105,106,90,0,92,2000\n",
            r"bars.csv, row 3, column Close: price 0 is not positive",
        ),
        (
            HEADER + GOOD_ROWS[0] + "2020-03-23,105,106,90,92,92,-5\n",
            r"bars.csv, row 3, column Volume: negative volume -5",
        ),
        (
            HEADER + GOOD_ROWS[0] + "2020-03-23,105,106,90,inf,92,5\n",
            r"bars.csv, row 3, column Close: 'inf' is not a finite number",
        ),
        (
            HEADER + GOOD_ROWS[1] + GOOD_ROWS[0],
            r"bars.csv, row 3, column Date: 2020-03-20 comes after 2020-03-23 \(row 2\); "
            "expected rows sorted oldest first",
        ),
        (
            HEADER + GOOD_ROWS[0] + GOOD_ROWS[0],
            r"bars.csv, row 3, column Date: duplicate date 2020-03-20 \(also on row 2\)",
        ),
        (
            HEADER + "20/03/2020,100,110,95,105,105,1000\n",
            r"bars.csv, row 2, column Date: '20/03/2020' is not a date",
        ),
        (
            HEADER + "2020-03-20,100,110,95,105,1000\n",
            r"bars.csv, row 2: has 6 values, expected 7",
        ),
        (
            HEADER + "2020-03-20,100,110,95,,105,1000\n",
            r"bars.csv, row 2, column Close: empty value",
        ),
        ("", r"bars.csv: empty file"),
        (HEADER, r"bars.csv: no bars after the header"),
    ],
)
def test_malformed_bars_name_file_row_and_column(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_bars_csv(write(tmp_path, text))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: cannot open"):
        read_bars_csv(tmp_path / "nope.csv")


def test_binary_garbage_is_a_data_error(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    with pytest.raises(DataError, match=r"bars\.csv"):
        read_bars_csv(path)


def test_vix_from_a_yfinance_export_uses_close(tmp_path, sp500):
    path = tmp_path / "vix.csv"
    yfinance_download_frame(sp500.iloc[:10] / 100, ["^VIX"]).to_csv(path)
    series = read_vix_csv(path)
    np.testing.assert_allclose(series.to_numpy(), sp500["close"].iloc[:10].to_numpy() / 100)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Date,Open\n2020-01-02,1\n", r"vix.csv, row 1: missing column 'Close' or 'VIX'"),
        ("Date,vix\n2020-01-02,-3\n", r"vix.csv, row 2, column VIX: VIX -3 is not positive"),
        ("Date,vix\n2020-01-02,x\n", r"vix.csv, row 2, column VIX: 'x' is not a number"),
        (
            "Date,vix\n2020-01-03,12\n2020-01-02,13\n",
            r"vix.csv, row 3, column Date: 2020-01-02 comes after",
        ),
        ("Date,vix\n2020-01-02,.\n", r"vix.csv: no VIX readings"),
    ],
)
def test_malformed_vix_names_file_row_and_column(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_vix_csv(write(tmp_path, text, "vix.csv"))


cell = st.one_of(
    st.sampled_from(["", ".", "nan", "-1", "0", "1e308", "1e400", "abc", "2020-01-02", "1/2/2020"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


@st.composite
def hostile_csv(draw):
    header = draw(
        st.one_of(
            st.just(HEADER.strip()),
            st.lists(
                st.sampled_from(["Date", "Open", "High", "Low", "Close", "Volume", "Price", "x"]),
                max_size=8,
            ).map(",".join),
        )
    )
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=8).map(",".join), max_size=8))
    return "\n".join([header, *rows]) + "\n"


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_csv())
def test_hostile_csv_gives_bars_or_a_data_error(tmp_path, text):
    path = write(tmp_path, text)
    try:
        bars = read_bars_csv(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert len(bars) > 0
        assert (bars[["open", "high", "low", "close"]] > 0).all().all()
        assert np.isfinite(bars.to_numpy()).all()
        assert bars.index.is_monotonic_increasing and bars.index.is_unique
    try:
        read_vix_csv(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_data_error_or_bars(tmp_path, data):
    path = tmp_path / "bytes.csv"
    path.write_bytes(data)
    try:
        read_bars_csv(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))
