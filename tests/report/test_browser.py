"""Every HTML report in a real browser: the retrain report (`regimed report` of a small real
retrain), the walk-forward evaluation (`regimed evaluate`), the live report (`regimed report
--live`) and the backtest (the short walk-forward of the backtest tests), each rendered by
headless Chromium (Debian's `chromium`).

A page must render with no console message at all: the pages run no script, so whatever
Chromium logs to the console (an SVG attribute it cannot parse, a resource it could not load)
is the page's fault. Chromium's `--enable-logging=stderr` prints every console message as a
`CONSOLE` line without its level, so any such line fails the test. The DOM Chromium built
(`--dump-dom`) must hold every chart of the page, found by the `<title>` of its `<svg>`, and a
screenshot (`--screenshot`) must be a real picture: decoded here with zlib, it has many
colours, not one.

Chromium reads file:// pages only, with host resolution mapped to nothing, a fresh profile in
tmp_path and a bounded run; a run that hangs is killed with its process group.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Config, StoreConfig
from daemon.config.backtest import BacktestConfig
from daemon.config.evaluate import EvaluateConfig
from daemon.evaluation.backtest import backtest
from daemon.report.backtest import write_report
from daemon.training.archive import Histories
from daemon.training.trainer import retrain
from tests.factories import (
    SMALL_MODELS,
    live_history,
    store_history,
    tool,
    write_config,
    write_live_store,
)

pytestmark = pytest.mark.integration

#: The bound on one Chromium run (it takes about a second).
CHROMIUM_TIMEOUT_S = 30
WINDOW = (1280, 1600)


# -- Chromium ------------------------------------------------------------------------------


def chromium(page: Path, profile: Path, *args: str) -> tuple[str, str]:
    """Run headless Chromium on the file `page` with `args`; its stdout and stderr."""
    command = [
        tool("chromium", "chromium"),
        "--headless=new",
        "--no-sandbox",  # required as root (CI containers), harmless otherwise
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing leaves the host
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        *args,
        page.as_uri(),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the renderer and helpers go with it
    )
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish {page.name} within {CHROMIUM_TIMEOUT_S} s")
    assert proc.returncode == 0, f"chromium exited {proc.returncode} on {page.name}:\n{err}"
    return out, err


def console_messages(stderr: str) -> list[str]:
    """The console messages and uncaught errors in Chromium's stderr log (its `CONSOLE` lines:
    `...:INFO:CONSOLE:7] "message", source: file:///... (7)`)."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]|Uncaught", line)]


class _Charts(HTMLParser):
    """The `<title>` of every `<svg>` element in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self._stack: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self._stack and self._stack[-1] == "svg":
            self._text = []
        self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._text is not None:
            self.titles.append("".join(self._text).strip())
            self._text = None
        if tag in self._stack:
            del self._stack[len(self._stack) - 1 - self._stack[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def chart_titles(document: str) -> list[str]:
    parser = _Charts()
    parser.feed(document)
    parser.close()
    return parser.titles


def png_pixels(data: bytes) -> np.ndarray:
    """The pixels (height x width x channels) of an 8-bit RGB or RGBA PNG, decoded with zlib
    and the five PNG row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, header, chunks = 8, b"", []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int64)
        if kind == 1:  # Sub: a running sum per channel
            line = np.cumsum(line.reshape(width, bpp), axis=0).reshape(stride) & 0xFF
        elif kind == 2:  # Up
            line = (line + prev) & 0xFF
        elif kind in (3, 4):  # Average, Paeth: each byte needs the one decoded before it
            cur = line.tolist()
            up = prev.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b, c = up[i], (up[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    cur[i] = (cur[i] + (a + b) // 2) & 0xFF
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                    cur[i] = (cur[i] + pred) & 0xFF
            line = np.asarray(cur, dtype=np.int64)
        out[y] = line
        prev = line
    return out.reshape(height, width, bpp)


def assert_renders(page: Path, charts: list[str], tmp_path: Path) -> None:
    """`page` renders in Chromium with no console message, every chart in `charts` (a title,
    or its start when it ends in "...") is an `<svg>` of the rendered DOM, no other chart is,
    and its screenshot is a picture."""
    source = page.read_text(encoding="utf-8")
    assert "<script" not in source  # the premise of "no console message at all"
    dom, log = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    shot = tmp_path / f"{page.stem}.png"
    _, shot_log = chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    messages = console_messages(log) + console_messages(shot_log)
    assert messages == [], f"{page.name}: console messages:\n" + "\n".join(messages)

    drawn = chart_titles(dom)
    assert len(drawn) == source.count("<svg"), (page.name, drawn)
    for chart in charts:
        if chart.endswith("..."):
            found = [t for t in drawn if t.startswith(chart[:-3])]
        else:
            found = [t for t in drawn if t == chart]
        assert len(found) == 1, f"{page.name}: chart {chart!r} not once in {drawn}"
    assert len(drawn) == len(charts), f"{page.name}: charts {drawn}, expected {charts}"

    assert shot.stat().st_size > 10_000, f"{shot.name}: {shot.stat().st_size} bytes"
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    rgb = pixels[..., :3].reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 50, f"{shot.name}: {len(colours)} colours"
    background = (rgb == rgb[0]).all(axis=1).mean()
    assert background < 0.98, f"{shot.name}: {background:.1%} of the pixels are the background"


# -- the reports ---------------------------------------------------------------------------


def test_the_retrain_report_renders_every_chart(run_cli, sp500, nasdaq, vix, tmp_path):
    config = Config().replace(
        store=StoreConfig(path=str(tmp_path / "store" / "regimed.db")), models=SMALL_MODELS
    )
    (tmp_path / "store").mkdir()
    store_history(config, {"^GSPC": sp500.iloc[-1500:], "^IXIC": nasdaq.iloc[-1500:]}, vix)
    report = retrain(config, trigger="manual")
    assert report.version is not None
    path = write_config(config, tmp_path / "regimed.toml")
    page = tmp_path / "retrain.html"
    result = run_cli("report", "--out", str(page), "--config", str(path))
    assert result.code == 0, result.err
    assert_renders(
        page,
        [
            "Balanced accuracy per regime (accuracy below)",
            "^GSPC over the validation period, by regime",
            "Rolling balanced accuracy per regime",
            "Reliability diagram of the ensemble on the validation rows",
            "Fit time per model (seconds)",
            "Vote weight per model",
            "Training rows per regime before and after sampling",
            "Share of rows and of weight per regime after sampling",
            "Confusion matrices on the validation rows",
            "Feature importances, top ...",
        ],
        tmp_path,
    )


def test_the_evaluation_report_renders_both_charts(run_cli, tmp_path):
    config = Config().replace(evaluate=EvaluateConfig(bootstrap_samples=200))
    path = write_config(config, tmp_path / "regimed.toml")
    out = tmp_path / "evaluation"
    result = run_cli(
        "evaluate",
        *("--config", str(path), "--out", str(out), "--models", "logistic_regression"),
        *("--start", "2010-01-01", "--end", "2012-01-01", "--step", "year"),
    )
    assert result.code == 0, result.err
    assert_renders(
        out / "evaluation.html",
        [
            "Balanced accuracy per regime and variant, 95% interval",
            "Cumulative balanced accuracy over the test period",
        ],
        tmp_path,
    )


def test_the_live_report_renders_its_chart(run_cli, tmp_path):
    db = tmp_path / "state" / "regimed.db"
    db.parent.mkdir()
    rows = live_history("2020-01-06", 60)
    write_live_store(db, rows, matured=len(rows) - 10)
    config = tmp_path / "regimed.toml"
    config.write_text(f'[store]\npath = "{db}"\n[gate]\nbootstrap_samples = 200\n')
    page = tmp_path / "live.html"
    result = run_cli("report", "--live", "--out", str(page), "--config", str(config))
    assert result.code == 0, result.err
    assert_renders(page, ["Live balanced accuracy per regime and ..."], tmp_path)


def test_the_backtest_report_renders_each_symbols_charts(sp500, tmp_path):
    walk = EvaluateConfig(start=dt.date(2010, 1, 1), step="year", models=("logistic_regression",))
    config = Config().replace(evaluate=walk, backtest=BacktestConfig(bootstrap_samples=100))
    bars = sp500.loc["2003-01-01":"2011-12-31"]
    result = backtest(config, Histories({"^GSPC": bars}, None, "S&P 500 2003-2011"))
    write_report(result, tmp_path / "backtest")
    assert_renders(
        tmp_path / "backtest" / "backtest.html",
        ["^GSPC: equity (log scale)", "^GSPC: drawdown", "^GSPC: exposure and regimes"],
        tmp_path,
    )


# -- the checks themselves -----------------------------------------------------------------


def test_a_console_error_an_svg_chromium_cannot_parse_and_a_blank_page_are_caught(tmp_path):
    """The checks fail where they should: a page whose SVG path Chromium rejects logs a
    console line, a chart hidden in a comment is not in the DOM, a blank page is one colour."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><svg width='10' height='10'><title>A</title>"
        "<path d='M 0 0 L x'/></svg><!-- <svg><title>B</title></svg> --></body></html>"
    )
    dom, log = chromium(bad, tmp_path / "profile-bad", "--dump-dom")
    assert any("<path> attribute d" in m for m in console_messages(log)), log
    assert chart_titles(dom) == ["A"]
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    shot = tmp_path / "blank.png"
    chromium(blank, tmp_path / "profile-blank", f"--screenshot={shot}")
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) == 1


def test_png_rows_of_every_filter_decode():
    """`png_pixels` against a PNG written here with each row filter in turn."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 4, 3), dtype=np.int64)
    encoded = []
    prev = np.zeros(12, dtype=np.int64)
    for kind, row in enumerate(image.reshape(5, 12)):
        left = np.concatenate([[0, 0, 0], row[:-3]])
        up_left = np.concatenate([[0, 0, 0], prev[:-3]])
        if kind == 0:
            pred = np.zeros(12, dtype=np.int64)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        encoded.append(bytes([kind]) + bytes(((row - pred) & 0xFF).astype(np.uint8)))
        prev = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(encoded)))
        + chunk(b"IEND", b"")
    )
    assert (png_pixels(data) == image).all()


def test_console_lines_are_found_among_chromiums_own_log():
    log = "\n".join(
        [
            "[1:2:1207/034626.141675:ERROR:dbus/bus.cc:405] Failed to connect to the bus",
            '[1:1:1207/034626.705024:INFO:CONSOLE:2] "boom", source: file:///a.html (2)',
            '[1:1:1207/034626.705024:INFO:CONSOLE(7)] "Uncaught TypeError: x", source: a (7)',
        ]
    )
    assert [re.sub(r"^.*\] ", "", m) for m in console_messages(log)] == [
        '"boom", source: file:///a.html (2)',
        '"Uncaught TypeError: x", source: a (7)',
    ]
