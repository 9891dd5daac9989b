"""`regimed backtest`: the JSON document and the report of a short walk-forward on a CSV, and
bad options refused with exit 2 and a message naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from daemon.evaluation.backtest import strategy_names


def _csv(bars: pd.DataFrame, path: Path) -> Path:
    frame = bars.rename(columns=str.title)
    frame.index.name = "Date"
    frame.to_csv(path)
    return path


CONFIG = """
[evaluate]
start = 2010-01-01
step = "year"
models = ["logistic_regression"]

[backtest]
bootstrap_samples = 50
"""


def test_backtest_json_and_report(run_cli, tmp_path: Path, sp500: pd.DataFrame) -> None:
    csv = _csv(sp500.loc["2004-01-01":"2011-12-31"], tmp_path / "SPY.csv")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    out = tmp_path / "report"
    result = run_cli(
        "backtest",
        "--config",
        str(config),
        "--bars",
        str(csv),
        "--json",
        "--out",
        str(out),
        "--cost-bps",
        "10",
    )
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["settings"]["cost_bps"] == 10.0
    assert list(doc["symbols"]) == ["SPY"]
    overall = doc["symbols"]["SPY"]["overall"]
    assert overall["start_close"] == "2010-01-04"
    assert set(overall["strategies"]) == set(strategy_names())
    for figures in overall["strategies"].values():
        assert figures["max_drawdown"]["depth"] <= 0.0
        assert 0.0 <= figures["time_in_market"] <= 1.0
    html = (out / "backtest.html").read_text()
    assert html.count("<svg") == 3 and "2011 Debt Ceiling" in html
    assert json.loads((out / "results.json").read_text()) == doc
    assert (out / "SPY_equity.svg").read_text().startswith("<svg")


def test_an_unknown_target_is_refused(run_cli) -> None:
    result = run_cli("backtest", "--target", "momentum")
    assert result.code == 2
    assert "--target momentum" in result.err and "volatility" in result.err


def test_a_negative_cost_is_refused(run_cli) -> None:
    result = run_cli("backtest", "--cost-bps", "-3")
    assert result.code == 2
    assert "--cost-bps -3" in result.err


def test_vix_needs_bars(run_cli, tmp_path: Path) -> None:
    result = run_cli("backtest", "--vix", str(tmp_path / "vix.csv"))
    assert result.code == 2 and "--vix" in result.err
