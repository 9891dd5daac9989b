"""Daily price histories from CSV files: yfinance exports, plain Date/OHLCV files, bundled data.

A reader that a quant can trust with a file from anywhere: every problem is reported with the
file, the row (1-based line number in the file) and the column, and nothing is guessed.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
import re
from importlib import resources
from pathlib import Path

import pandas as pd

from daemon.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")
VIX_VALUE_COLUMNS = ("close", "vix", "adj close")
MISSING = ("", ".", "nan", "NaN", "null", "None")

BUNDLED = {
    "sp500": "sp500.csv.gz",
    "nasdaq": "nasdaq.csv.gz",
    "vix": "vix.csv.gz",
}

_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def bundled_path(name: str) -> Path:
    """Path of a bundled history: sp500, nasdaq (1999-2018 daily bars) or vix (2014-2018)."""
    try:
        filename = BUNDLED[name]
    except KeyError:
        raise DataError(
            f"bundled history {name!r}: expected one of {', '.join(sorted(BUNDLED))}"
        ) from None
    return Path(str(resources.files("daemon.data").joinpath(filename)))


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Column names (lower case, yfinance multi-row headers folded) and numbered data rows."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        rows: list[tuple[int, list[str]]] = []
        try:
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    rows.append((reader.line_num, [cell.strip() for cell in row]))
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
            raise DataError(
                f"{path}, row {reader.line_num + 1}: not a readable CSV: {exc}"
            ) from None
    if not rows:
        raise DataError(f"{path}: empty file, expected a header row and daily bars")
    header = rows[0][1]
    body = rows[1:]
    first = header[0].lower()
    if first in ("price", "ticker") and body and body[0][1][0].lower() in ("price", "ticker"):
        # yfinance >= 0.2.48 writes a two-level header (Price/Ticker) and a "Date" row.
        second = body[0][1]
        names_row, tickers_row = (header, second) if first == "price" else (second, header)
        tickers = sorted({t for t in tickers_row[1:] if t})
        if len(tickers) > 1:
            raise DataError(
                f"{path}, row {body[0][0]}: holds several tickers ({', '.join(tickers)}); "
                "expected one ticker per file"
            )
        body = body[1:]
        if body and body[0][1][0].lower() in ("date", "datetime") and not any(body[0][1][1:]):
            body = body[1:]
        names = ["date", *(n.lower() for n in names_row[1:])]
    else:
        names = [n.lower() for n in header]
        if names[0] in ("", "datetime"):
            names[0] = "date"
    return names, body


def _column_index(path: Path, names: list[str], wanted: str) -> int:
    if wanted not in names:
        shown = ", ".join(n or "<blank>" for n in names)
        raise DataError(
            f"{path}, row 1: missing column {wanted.title()!r} (columns found: {shown})"
        )
    return names.index(wanted)


def parse_day(text: str) -> dt.date:
    """A trading day from ISO 8601 (date or date-time, with or without offset) or M/D/YYYY."""
    m = _US_DATE.match(text)
    if m:
        month, day, year = (int(g) for g in m.groups())
        return dt.date(year, month, day)
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    # A timestamp with an offset is the exchange-local time, so its date is the trading day.
    return dt.datetime.fromisoformat(text).date()


def _check_order(path: Path, line: int, day: dt.date, previous: tuple[int, dt.date] | None) -> None:
    if previous is None:
        return
    prev_line, prev_day = previous
    if day == prev_day:
        raise DataError(
            f"{path}, row {line}, column Date: duplicate date {day} (also on row {prev_line}); "
            "expected one daily bar per date"
        )
    if day < prev_day:
        raise DataError(
            f"{path}, row {line}, column Date: {day} comes after {prev_day} (row {prev_line}); "
            "expected rows sorted oldest first"
        )


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}, row {line}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}, row {line}, column {column}: {text!r} is not a finite number")
    return value


def _day(path: Path, line: int, text: str) -> dt.date:
    try:
        return parse_day(text)
    except ValueError:
        raise DataError(
            f"{path}, row {line}, column Date: {text!r} is not a date "
            "(expected YYYY-MM-DD, an ISO 8601 timestamp or M/D/YYYY)"
        ) from None


def read_bars_csv(path: str | Path) -> pd.DataFrame:
    """Daily OHLCV bars of one symbol, indexed by day (a DatetimeIndex named "date").

    Accepts `yfinance.download(...).to_csv()` output and plain Date,Open,High,Low,Close,
    [Adj Close,]Volume files. The Close column is used as the price (yfinance's Close is
    split-adjusted). Rows where every value is empty (yfinance writes them for days a ticker
    did not trade) are skipped; any other problem raises `DataError`.
    """
    path = Path(path)
    names, body = _read_table(path)
    date_col = _column_index(path, names, "date")
    cols = {c: _column_index(path, names, c) for c in BAR_COLUMNS}
    days: list[dt.date] = []
    values: dict[str, list[float]] = {c: [] for c in BAR_COLUMNS}
    previous: tuple[int, dt.date] | None = None
    for line, row in body:
        if len(row) != len(names):
            raise DataError(
                f"{path}, row {line}: has {len(row)} values, expected {len(names)} "
                f"(one per column of the header)"
            )
        cells = {c: row[i] for c, i in cols.items()}
        if all(cells[c] in MISSING for c in BAR_COLUMNS):
            continue
        day = _day(path, line, row[date_col])
        _check_order(path, line, day, previous)
        previous = (line, day)
        for column, text in cells.items():
            title = column.title()
            if text in MISSING:
                raise DataError(f"{path}, row {line}, column {title}: empty value")
            value = _number(path, line, title, text)
            if column == "volume" and value < 0:
                raise DataError(f"{path}, row {line}, column Volume: negative volume {text}")
            if column != "volume" and value <= 0:
                raise DataError(f"{path}, row {line}, column {title}: price {text} is not positive")
            values[column].append(value)
        days.append(day)
    if not days:
        raise DataError(f"{path}: no bars after the header")
    index = pd.DatetimeIndex(pd.to_datetime(days), name="date")
    return pd.DataFrame(values, index=index)


def read_vix_csv(path: str | Path) -> pd.Series:
    """Daily VIX closes indexed by day, from a yfinance ^VIX export or a Date,VIX file.

    The value column is the first of Close, VIX, Adj Close that exists. Missing readings
    (an empty cell or FRED's ".") are skipped: they mark days the index was not published.
    """
    path = Path(path)
    names, body = _read_table(path)
    date_col = _column_index(path, names, "date")
    present = [c for c in VIX_VALUE_COLUMNS if c in names]
    if not present:
        shown = ", ".join(n or "<blank>" for n in names)
        raise DataError(f"{path}, row 1: missing column 'Close' or 'VIX' (columns found: {shown})")
    value_col = names.index(present[0])
    title = present[0].title() if present[0] != "vix" else "VIX"
    days: list[dt.date] = []
    values: list[float] = []
    previous: tuple[int, dt.date] | None = None
    for line, row in body:
        if len(row) != len(names):
            raise DataError(
                f"{path}, row {line}: has {len(row)} values, expected {len(names)} "
                f"(one per column of the header)"
            )
        text = row[value_col]
        if text in MISSING:
            continue
        day = _day(path, line, row[date_col])
        _check_order(path, line, day, previous)
        previous = (line, day)
        value = _number(path, line, title, text)
        if value <= 0:
            raise DataError(f"{path}, row {line}, column {title}: VIX {text} is not positive")
        days.append(day)
        values.append(value)
    if not days:
        raise DataError(f"{path}: no VIX readings after the header")
    return pd.Series(values, index=pd.DatetimeIndex(pd.to_datetime(days), name="date"), name="vix")
