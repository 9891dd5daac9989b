"""The live report (`regimed report --live`): stored predictions against their matured labels,
per regime, per model version and per week or month, from a real store."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from daemon.domain import REGIMES
from daemon.report.live import MIN_ROWS, live_report, period_of
from daemon.store.predictions import StoredPrediction
from daemon.store.sqlite import Store
from tests.factories import live_history, write_live_store


@pytest.fixture
def config_path(tmp_path) -> str:
    db = tmp_path / "state" / "regimed.db"
    db.parent.mkdir()
    rows = live_history("2020-01-06", 60)
    write_live_store(db, rows, matured=len(rows) - 2 * 5)  # the last five days still pending
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "{db}"\n[gate]\nbootstrap_samples = 200\n')
    return str(path)


def test_json_scores_each_regime_and_counts_pending(run_cli, config_path):
    result = run_cli("report", "--live", "--json", "--config", config_path)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert (doc["predictions"], doc["matured"], doc["pending"]) == (120, 110, 10)
    assert (doc["first_day"], doc["last_day"]) == ("2020-01-06", "2020-03-27")
    assert doc["champion"] is None and doc["since"] is None
    normal, crash = doc["per_regime"]["normal"], doc["per_regime"]["crash"]
    assert normal["balanced_accuracy"] == 1.0 and normal["accuracy"] == 1.0
    assert crash["balanced_accuracy"] == 0.5
    assert crash["accuracy"] == pytest.approx(crash["up_share"])
    assert normal["ci95"] == [1.0, 1.0]
    low, high = doc["per_regime"]["low_volatility"]["ci95"]
    assert 0 <= low < high <= 1
    # Regimes without predictions: a count of 0 and no figures.
    assert doc["per_regime"]["recovery"] == {
        "n": 0, "up_share": None, "accuracy": None, "balanced_accuracy": None, "ci95": None,
    }  # fmt: skip
    assert sum(doc["per_regime"][r]["n"] for r in REGIMES) == doc["overall"]["n"] == 110
    # Twelve weeks of matured days: weekly periods, each holding its matured predictions.
    assert doc["period"] == "week"
    assert [p["period"] for p in doc["periods"]][:2] == ["2020-W02", "2020-W03"]
    assert sum(p["overall"]["n"] for p in doc["periods"]) == 110
    assert doc["versions"]["v1"]["predictions"] == 60
    assert doc["versions"]["v2"]["matured"] == 50


def test_since_keeps_the_later_predictions(run_cli, config_path):
    result = run_cli("report", "--live", "--json", "--since", "2020-03-02", "--config", config_path)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["since"] == "2020-03-02"
    assert doc["first_day"] == "2020-03-02"
    assert doc["predictions"] == 2 * 20
    assert list(doc["versions"]) == ["v2"]


def test_the_page_holds_the_tables_and_a_strip_per_regime(run_cli, config_path, tmp_path):
    out = tmp_path / "live.html"
    result = run_cli("report", "--live", "--config", config_path, "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert page.count("<svg") == 1
    svg = page[page.index("<svg") : page.index("</svg>")]
    for regime in (*REGIMES, "overall"):
        assert f">{regime}</text>" in svg
    # One dot per scored week of the normal regime, its tooltip naming the week.
    assert len(re.findall(r"<title>normal, 2020-W\d\d: 1\.000", svg)) == 4
    assert "110 matured predictions" in page and "10 waiting" in page


def test_the_default_page_goes_beside_the_store(run_cli, config_path, tmp_path):
    result = run_cli("report", "--live", "--config", config_path)
    assert result.code == 0, result.err
    assert Path(result.out.strip()) == tmp_path / "state" / "reports" / "live.html"
    assert Path(result.out.strip()).is_file()


def test_no_matured_prediction_says_why_and_exits_2(run_cli, tmp_path):
    db = tmp_path / "regimed.db"
    write_live_store(db, live_history("2020-01-06", 3), matured=0)
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    result = run_cli("report", "--live", "--config", str(config))
    assert result.code == 2
    assert "no matured live prediction yet (6 predictions stored, none with its label yet)" in (
        result.err
    )
    assert "label.horizon_bars = 5" in result.err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("report", "--live", "v1"), "report --live takes no VERSION (got 'v1')"),
        (("report", "--since", "2020-01-01"), "--since goes with --live"),
    ],
)
def test_misused_options_exit_2_naming_them(run_cli, config_path, args, message):
    result = run_cli(*args, "--config", config_path)
    assert result.code == 2
    assert message in result.err


# --- the figures without the command --------------------------------------------------------


def stored(ts: str, regime: str, prediction: int, label: int | None) -> StoredPrediction:
    return StoredPrediction("SPY", ts, regime, "v1", 0.5, prediction, label)


def test_a_group_below_the_minimum_gets_its_count_and_no_figures():
    rows = [stored(f"2021-01-{d:02d}", "crash", d % 2, (d + 1) % 2) for d in range(1, MIN_ROWS)]
    cell = live_report(rows)["per_regime"]["crash"]
    assert cell == {
        "n": MIN_ROWS - 1, "up_share": None, "accuracy": None, "balanced_accuracy": None,
        "ci95": None,
    }  # fmt: skip


def test_one_true_label_gives_accuracy_but_no_balanced_accuracy():
    rows = [stored(f"2021-01-{d:02d}", "normal", d % 2, 1) for d in range(1, 21)]
    cell = live_report(rows)["per_regime"]["normal"]
    assert cell["accuracy"] == 0.5 and cell["up_share"] == 1.0
    assert cell["balanced_accuracy"] is None and cell["ci95"] is None


def test_periods_are_months_past_half_a_year():
    start = dt.date(2021, 1, 4)
    days = [(start + dt.timedelta(days=7 * k)).isoformat() for k in range(30)]
    report = live_report(stored(day, "normal", 1, 1) for day in days)
    assert report["period"] == "month"
    assert [p["period"] for p in report["periods"]][:2] == ["2021-01", "2021-02"]
    assert period_of("2021-01-03", "week") == "2020-W53"


def test_the_champion_is_named_and_its_stored_report_prints_as_json(run_cli, config_path, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from daemon.registry.versions import Registry
    from tests.factories import make_data, register

    X, y = make_data()
    with Store(tmp_path / "state" / "regimed.db") as store:
        models = {"logistic_regression": LogisticRegression().fit(X, y)}
        register(Registry(store), "v2", models, promote_reason="gate passed: first model")
    result = run_cli("report", "--live", "--json", "--config", config_path)
    assert result.code == 0, result.err
    assert json.loads(result.out)["champion"] == "v2"
    out = tmp_path / "live.html"
    assert run_cli("report", "--live", "--out", str(out), "--config", config_path).code == 0
    assert "<code>v2</code> (champion)" in out.read_text()

    result = run_cli("report", "--json", "--config", config_path)
    assert result.code == 0, result.err
    assert json.loads(result.out)["validation"]["overall"]["balanced_accuracy"] == 0.55
