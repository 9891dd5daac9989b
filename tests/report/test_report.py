"""`regimed report`: the retrain report as a self-contained HTML page, from a real retrain report
(tests/report/data/retrain_report.json, a retrain on the bundled history) and from small
hand-made ones, and the command against a real store with a registered model."""

from __future__ import annotations

import copy
import datetime as dt
import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from daemon.registry.versions import Registry
from daemon.report.retrain_html import render_html
from daemon.report.svg import date_ticks, ticks
from daemon.store.sqlite import Store
from daemon.training.report import RetrainReport

parse = RetrainReport.from_json
REPORT = json.loads((Path(__file__).parent / "data" / "retrain_report.json").read_text())
FIGURES = (
    7  # per-regime scores, fit times, vote weights, mix, weight shares, confusion, importances
)
REGIMES = ("low_volatility", "normal", "high_volatility", "crash", "recovery")


def cell(n, accuracy, balanced):
    return {"n": n, "accuracy": accuracy, "balanced_accuracy": balanced}


def small_report(model="logistic_regression", feature="ret_1", reason="no champion yet"):
    """A report of one model with a champion, an interval and null regimes."""
    per_regime = {r: cell(100, 0.55, 0.52) for r in REGIMES}
    per_regime["crash"] = cell(12, None, None)  # too few rows
    per_regime["recovery"] = cell(80, 0.6, None)  # one label only
    scores = {"accuracy": 0.56, "balanced_accuracy": 0.53, "per_regime": per_regime}
    return {
        "version": "v1",
        "trigger": "manual",
        "validation": {
            "per_regime": per_regime,
            "overall": cell(492, 0.56, 0.53),
            "baselines": {"always_up": {"accuracy": 0.58, "balanced_accuracy": 0.5}},
            "models": {model: {**scores, "fit_seconds": 0.4}, "ensemble": {**scores}},
        },
        "training": {
            "regime_counts_before": dict.fromkeys(REGIMES, 10),
            "regime_counts_after": dict.fromkeys(REGIMES, 12),
            "weight_share": dict.fromkeys(REGIMES, 0.2),
            "effective_size_ratio": 1.0,
        },
        "ensemble": {"weights": {model: 1.0}, "holdout_balanced_accuracy": {model: None}},
        "confusion": {model: [[10, 5], [3, 12]], "ensemble": [[10, 5], [3, 12]]},
        "importances": {model: {feature: 0.7, "vol_5": 0.3}},
        "champion": {"per_regime": per_regime, "overall": cell(492, 0.55, 0.51)},
        "gate": {"metric": "balanced_accuracy", "rule": "passed", "interval": [-0.004, 0.031]},
        "promoted": True,
        "reason": reason,
    }


def decision_part(page):
    return page[page.index('<section class="decision') : page.index("</section>")]


def test_a_real_report_has_one_plot_per_figure_and_the_decision_first():
    page = render_html(parse(REPORT))
    assert page.count("<svg") == FIGURES
    decision = decision_part(page)
    assert "PROMOTED (no_champion)" in decision
    assert html.escape(REPORT["reason"]) in decision
    assert "no champion to compare with" in decision
    assert page.index('<section class="decision') < page.index("<svg")
    for name in [*REPORT["validation"]["models"], *REPORT["validation"]["baselines"]]:
        assert f"<td>{name}" in page or f"<th>{name}" in page, name
        assert f">{name}" in page[page.index("<svg") :], name  # drawn in a figure too
    for feature in ("skew_63", "vix_is_proxy", "regime_recovery"):
        assert f"<td>{feature}</td>" in page  # every feature in the full table


def test_the_page_is_self_contained():
    page = render_html(parse(REPORT))
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "://" not in page
    assert "@import" not in page
    assert "url(" not in page


def test_null_scores_are_n_a_gaps_never_zero():
    page = render_html(parse(REPORT))
    # 89 validation rows of high_volatility: too few to score in this run
    assert "ensemble · high_volatility: balanced accuracy n/a, accuracy n/a, n 89" in page
    assert "always_up (naive) · crash: balanced accuracy n/a" in page

    page = render_html(parse(small_report()))
    assert "logistic_regression · crash: balanced accuracy n/a, accuracy n/a, n 12" in page
    # one label only: accuracy is known, balanced accuracy is not
    assert "ensemble · recovery: balanced accuracy n/a, accuracy 0.600, n 80" in page
    assert "acc 0.600" in page
    assert '<td class="na">n/a</td>' in page  # holdout balanced accuracy of the model
    assert "0.000" not in page


def test_champion_row_and_interval_are_shown():
    page = render_html(parse(small_report()))
    assert "PROMOTED (passed)" in page
    assert "95% paired bootstrap interval [-0.004, +0.031]" in decision_part(page)
    assert "champion · overall: balanced accuracy 0.510, accuracy 0.550, n 492" in page
    assert "champion 0.510" in page


def _windows(refit: bool) -> dict:
    def window(first, last, rows):
        return {"first": first, "last": last, "rows": rows}

    return {
        "fit": window("2004-01-02", "2013-02-01", 4210),
        "vote": window("2013-02-11", "2015-06-30", 1180),
        "validation": window("2015-07-01", "2018-12-21", 1490),
        "refit": window("2004-01-02", "2018-12-21", 6950) if refit else None,
        "refit_fit_seconds": {"logistic_regression": 0.7} if refit else {},
        "refit_note": None if refit else "not refit: training.refit is off",
    }


def test_the_window_each_stage_saw_and_the_refit_seconds_are_shown():
    from daemon.report.retrain_text import render

    doc = {**small_report(), "windows": _windows(refit=True)}
    report = parse(doc)
    assert report.to_json()["windows"] == doc["windows"]
    page, text = render_html(report), render(report)
    assert (
        '<tr><td>refit (served)</td><td class="day">2004-01-02</td>'
        '<td class="day">2018-12-21</td><td>6,950</td></tr>' in page
    )
    assert (
        '<tr><td>weigh the vote</td><td class="day">2013-02-11</td>'
        '<td class="day">2015-06-30</td>' in page  # a date never wraps
    )
    assert "<td>0.7</td></tr>" in page  # the refit's fit seconds, last column of the model
    assert "  refit (served)           2004-01-02  2018-12-21     6,950" in text
    assert "  fit the members          2004-01-02  2013-02-01     4,210" in text
    line = next(x for x in text.splitlines() if x.startswith("logistic_regression"))
    assert line.split()[-2:] == ["0.4", "0.7"]  # fit s, refit s

    off = parse({**small_report(), "windows": _windows(refit=False)})
    page, text = render_html(off), render(off)
    assert '<tr><td>refit (served)</td><td class="na">n/a</td>' in page
    assert "<p>not refit: training.refit is off</p>" in page
    assert "  not refit: training.refit is off" in text


def test_hostile_names_and_reason_are_escaped():
    model = '<img src=x onerror="alert(1)">&amp;'
    feature = "</svg><script>alert(2)</script>"
    reason = "<b>promoted</b> & 'quoted'"
    page = render_html(parse(small_report(model, feature, reason)))
    for raw in (model, feature, reason):
        assert raw not in page
        assert html.escape(raw) in page
    assert "<script" not in page
    assert "<img" not in page


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_any_name_leaves_the_markup_as_it_is(text):
    plain = render_html(parse(small_report("mx", "fx", "r")))
    page = render_html(parse(small_report("m" + text, "f" + text, text or "r")))
    assert (page.count("<"), page.count(">")) == (plain.count("<"), plain.count(">"))


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"trigger": "drift", "version": None, "promoted": False, "outcome": "failed",
         "reason": "retrain failed: no live samples", "duration_seconds": 0.2},
        {**copy.deepcopy(REPORT), "confusion": {"ensemble": [[1, 2]]}, "importances": None},
    ],
)  # fmt: skip
def test_partial_reports_still_render(report):
    page = render_html(parse(report))
    assert page.endswith("</html>\n")
    if "reason" in report:
        assert html.escape(report["reason"]) in page
    if not report:
        assert "NO DECISION RECORDED" in page
        assert "<svg" not in page
    assert "not in this report" in page


# -- regimed report ------------------------------------------------------------------------

T0 = dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC)


def register(registry, version, trained_at, report, **kwargs):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(np.int8)
    return registry.register(
        version,
        {"logistic_regression": LogisticRegression().fit(X, y)},
        trained_at=trained_at,
        trigger="manual",
        data_window=("2020-01-02", "2023-12-29"),
        sample_counts={"live": 400, "archive": 20},
        report=report,
        **kwargs,
    )


@pytest.fixture
def cli_store(tmp_path):
    """A configuration whose store holds v1 (champion, the real report) and v2 (candidate)."""
    db = tmp_path / "store" / "regimed.db"
    db.parent.mkdir()
    config = tmp_path / "regimed.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    with Store(db) as store:
        registry = Registry(store)
        register(registry, "v1", T0, REPORT, promote_reason="gate passed: first model")
        register(registry, "v2", T0 + dt.timedelta(days=7), small_report(reason="not better"))
    return str(config), db


def test_report_writes_the_champion_beside_the_store_and_prints_the_path(run_cli, cli_store):
    config, db = cli_store
    result = run_cli("report", "--config", config)
    assert result.code == 0, result.err
    out = db.parent / "reports" / "v1.html"
    assert result.out == f"{out}\n"
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") == FIGURES
    assert "regimed model v1" in page
    assert "status <strong>champion</strong>" in page
    assert "trained 2024-01-06T21:00+00:00" in page
    assert "samples live 400, archive 20" in page
    assert not list(out.parent.glob(".*"))  # no partial file left behind


def test_report_of_a_version_to_a_chosen_file(run_cli, cli_store, tmp_path):
    config, _ = cli_store
    out = tmp_path / "v2.html"
    result = run_cli("report", "v2", "--out", str(out), "--config", config)
    assert result.code == 0, result.err
    page = out.read_text(encoding="utf-8")
    assert "regimed model v2" in page
    assert "status <strong>candidate</strong>" in page
    assert "not better" in page


def test_report_without_a_champion_takes_the_latest_model(run_cli, tmp_path):
    db = tmp_path / "regimed.db"
    config = tmp_path / "regimed.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    with Store(db) as store:
        register(Registry(store), "v1", T0, small_report())
        register(Registry(store), "v2", T0 + dt.timedelta(days=1), small_report())
    result = run_cli("report", "--config", str(config))
    assert result.code == 0, result.err
    assert result.out.strip().endswith("reports/v2.html")


def test_report_usage_errors_exit_2_and_name_the_problem(run_cli, cli_store, tmp_path):
    config, db = cli_store
    result = run_cli("report", "v9", "--config", config)
    assert result.code == 2
    assert "model version 'v9' is not registered (see `regimed models list`)" in result.err
    assert not (db.parent / "reports").exists()

    result = run_cli("report", "--out", str(tmp_path / "nowhere" / "r.html"), "--config", config)
    assert result.code == 2
    assert "no directory" in result.err

    empty = tmp_path / "empty.db"
    Store(empty).close()
    other = tmp_path / "empty.toml"
    other.write_text(f'[store]\npath = "{empty}"\n')
    result = run_cli("report", "--config", str(other))
    assert result.code == 2
    assert "no registered models yet" in result.err

    missing = tmp_path / "missing.toml"
    missing.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    result = run_cli("report", "--config", str(missing))
    assert result.code == 2
    assert "no database there yet" in result.err


@given(
    st.floats(-1e4, 1e4, allow_nan=False),  # prices, scores, rows: what the figures draw
    st.floats(1e-3, 1e6, allow_nan=False),
)
def test_axis_ticks_are_round_values_that_cover_the_range(low, span):
    high = low + span
    values = ticks(low, high)
    assert 2 <= len(values) <= 12
    steps = {round(b - a, 12) for a, b in itertools.pairwise(values)}
    step = float(f"{max(steps):.6g}")  # the difference of two ticks, float noise dropped
    assert values[0] <= low + 1e-6 * step and values[-1] >= high - 1e-6 * step
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6  # 1, 2 or 5 times 10^k
    for v in values:
        k = v / step
        assert abs(k - round(k)) < 1e-6 * max(1.0, abs(k))  # each a multiple of the step


def test_date_ticks_fall_on_month_or_year_starts_and_never_crowd():
    days = [str(d) for d in np.arange(np.datetime64("2017-03-01"), np.datetime64("2018-12-31"))]
    found = date_ticks(days)
    assert 1 <= len(found) <= 8
    assert all(label == days[i][:7] and days[i - 1][:7] != label for i, label in found)
    long = [str(d) for d in np.arange(np.datetime64("2001-01-01"), np.datetime64("2018-12-31"))]
    assert all(len(label) == 4 for _, label in date_ticks(long))


def test_confusion_cells_colour_right_and_wrong_calls_apart():
    doc = copy.deepcopy(REPORT)
    doc["confusion"] = {"ensemble": [[50, 50], [50, 50]]}  # same counts in every cell
    page = render_html(parse(doc))
    fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"><title>ensemble: actual', page)
    assert len(fills) == 4
    tn, fp, fn, tp = fills
    assert tn == tp and fp == fn and tn != fp
