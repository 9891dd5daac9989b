"""The typed retrain report: parsing a stored report (today's, an older or partial one, one with
nulls, wrong types or keys this version does not know) and writing it back as the same JSON."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import Config, ModelsConfig, StoreConfig
from daemon.config.training import LightGBMConfig, RandomForestConfig
from daemon.report.retrain_html import render_html
from daemon.report.retrain_text import render
from daemon.training.report import EMPTY_CELL, Diagnostics, RetrainReport, ScoreCell
from daemon.training.trainer import retrain
from tests.factories import store_history

#: A report of a retrain on the bundled history, as `regimed retrain --json` printed it.
REPORT = json.loads(
    (Path(__file__).parents[1] / "report" / "data" / "retrain_report.json").read_text()
)
SECTIONS = [k for k in REPORT if k not in ("trigger", "version")]


def test_a_real_report_round_trips_key_for_key_and_in_order():
    report = RetrainReport.from_json(REPORT)
    assert report.to_json() == REPORT
    assert json.dumps(report.to_json()) == json.dumps(REPORT)  # the same order too
    assert report.extra == {}
    assert report.validation is not None and report.validation.overall is not None
    assert report.validation.overall.n == REPORT["validation"]["overall"]["n"]
    assert report.champion is None  # null in the report: there was no champion
    assert "champion" in report.to_json()  # and still written as null once the gate ran


def test_a_failed_runs_report_keeps_only_the_steps_it_finished():
    failed = {
        "trigger": "schedule",
        "version": None,
        "split": REPORT["split"],
        "data_window": REPORT["data_window"],
        "samples": REPORT["samples"],
        "training": REPORT["training"],
        "promoted": False,
        "reason": "retrain failed: no model could be fitted",
        "outcome": "failed",
        "duration_seconds": 3.2,
    }
    report = RetrainReport.from_json(failed)
    assert json.dumps(report.to_json()) == json.dumps(failed)
    assert report.validation is None and report.gate is None and report.champion is None


def test_an_old_or_partial_report_reads_with_missing_sections_as_none():
    report = RetrainReport.from_json({"trigger": "drift", "promoted": False})
    assert (report.trigger, report.version, report.promoted) == ("drift", None, False)
    assert report.validation is None and report.training is None and report.split is None
    assert report.to_json() == {"trigger": "drift", "version": None, "promoted": False}
    text = render(report)
    assert "decision: NOT PROMOTED (failed): no reason recorded" in text
    assert "None" not in text
    assert "not in this report" in render_html(report)


def test_nulls_stay_null_and_are_never_read_as_zero():
    doc = copy.deepcopy(REPORT)
    doc["validation"]["per_regime"]["crash"] = {"n": 4, "accuracy": None, "balanced_accuracy": None}
    for key in ("split", "training", "gate", "artifact", "duration_seconds", "feature_version"):
        doc[key] = None
    report = RetrainReport.from_json(doc)
    assert report.validation is not None
    assert report.validation.ensemble.regime("crash") == ScoreCell(4, None, None)
    assert report.split is None and report.gate is None and report.duration_seconds is None
    out = report.to_json()
    assert out["validation"]["per_regime"]["crash"]["balanced_accuracy"] is None
    for key in ("split", "training", "gate", "artifact", "duration_seconds", "feature_version"):
        assert key not in out  # a null section is an absent one
    assert "NO DECISION" not in render_html(report)


def test_the_peak_memory_is_written_read_back_and_shown_beside_the_time():
    doc = {**REPORT, "peak_rss_bytes": 734_003_200}  # 700 MiB
    report = RetrainReport.from_json(doc)
    assert report.peak_rss_bytes == 734_003_200
    assert report.to_json()["peak_rss_bytes"] == 734_003_200
    assert report.extra == {}
    first = render(report).splitlines()[0]
    assert first.endswith(f"{REPORT['duration_seconds']:.1f} s  peak memory 700 MiB"), first
    assert "peak memory 700 MiB" in render_html(report)
    # an older report has none; a value of the wrong type counts as missing
    for old in (REPORT, {**REPORT, "peak_rss_bytes": "700M"}, {**REPORT, "peak_rss_bytes": True}):
        report = RetrainReport.from_json(old)
        assert report.peak_rss_bytes is None
        assert "peak_rss_bytes" not in report.to_json()
        assert "peak memory" not in render(report) + render_html(report)


def test_a_regime_or_group_the_report_lacks_is_the_empty_cell():
    doc = copy.deepcopy(REPORT)
    del doc["validation"]["per_regime"]["recovery"]
    del doc["validation"]["overall"]
    report = RetrainReport.from_json(doc)
    assert report.validation is not None
    assert report.validation.ensemble.regime("recovery") is EMPTY_CELL
    assert report.validation.ensemble.total is EMPTY_CELL
    assert report.validation.overall is None


def test_unknown_top_level_keys_are_kept_and_written_back_last():
    doc = {**REPORT, "calibration": {"brier": 0.24}, "note": "from a newer regimed"}
    report = RetrainReport.from_json(doc)
    assert report.extra == {"calibration": {"brier": 0.24}, "note": "from a newer regimed"}
    assert report.to_json() == doc
    assert list(report.to_json())[-2:] == ["calibration", "note"]


def test_unknown_keys_inside_a_known_section_are_dropped():
    doc = copy.deepcopy(REPORT)
    doc["gate"]["comment"] = "hand-edited"
    out = RetrainReport.from_json(doc).to_json()
    assert "comment" not in out["gate"]
    assert out["gate"] == REPORT["gate"]


def test_values_of_the_wrong_type_count_as_missing():
    doc = {
        "trigger": 7,
        "split": "2015-02-25",
        "promoted": "yes",
        "duration_seconds": float("nan"),
        "gate": {"metric": "balanced_accuracy", "rule": "passed", "interval": [0.1]},
        "confusion": {"ensemble": [[1, 2]], "lightgbm": [[1, 2], [3, 4]]},
        "importances": None,
        "samples": {"live": {"crash": 3, "normal": 40}, "archive": 9},  # per regime: summed
    }
    report = RetrainReport.from_json(doc)
    assert report.trigger is None and report.split is None and report.promoted is None
    assert report.duration_seconds is None
    assert report.gate is not None and report.gate.interval is None
    assert report.confusion == {"lightgbm": ((1, 2), (3, 4))}
    assert report.importances is None
    assert report.samples == {"live": 43, "archive": 9}
    page = render_html(report)
    assert "NO DECISION RECORDED" in page
    assert "No interval: there was no champion to compare with." in page


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from([*REPORT, "other"]), JSON, max_size=8))
def test_any_json_object_parses_renders_and_parses_again_to_the_same_value(doc):
    report = RetrainReport.from_json(doc)
    assert RetrainReport.from_json(report.to_json()) == report
    assert render_html(report).endswith("</html>\n")
    assert render(report).endswith("\n")


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(SECTIONS)), st.sets(st.sampled_from(SECTIONS)))
def test_a_real_report_with_sections_removed_or_null_still_renders(removed, nulled):
    doc = {
        k: (None if k in nulled else v)
        for k, v in copy.deepcopy(REPORT).items()
        if k not in removed
    }
    report = RetrainReport.from_json(doc)
    assert render_html(report).endswith("</html>\n")
    assert render(report).endswith("\n")


def _with_gate_figures() -> dict:
    """The real report with the sections the honest gate adds: the edge over the best naive
    reference, regimes compared with a champion, and the overall figures with intervals."""
    doc = copy.deepcopy(REPORT)
    doc["gate"] = {
        "metric": "balanced_accuracy",
        "rule": "naive_edge",
        "interval": [-0.02, 0.01],
        "edge": {"against": "always up", "difference": 0.024, "interval": [-0.011, 0.058],
                 "n": 3000},
        "regimes": {"normal": {"against": "the champion", "difference": -0.01,
                               "interval": [-0.03, 0.012], "n": 1200}},
    }  # fmt: skip
    figure = {"value": 0.52, "interval": [0.5, 0.54]}
    doc["skill"] = {
        who: {m: dict(figure) for m in ("balanced_accuracy", "accuracy", "auc", "brier")}
        for who in ("candidate", "champion", "always_up", "previous_return")
    }
    doc["skill"]["candidate"]["auc"] = {"value": 0.531, "interval": [0.512, 0.549]}
    doc["skill"]["always_up"]["brier"] = {"value": 0.2437, "interval": None}
    doc["reason"] = (
        "no skill shown: balanced accuracy +0.024 [-0.011, +0.058] over always up (the lower "
        "bound must be above min_edge 0)"
    )
    ordered = {k: v for k, v in doc.items() if k not in ("skill", "promoted")}
    keys = list(ordered)
    at = keys.index("gate") + 1
    return {**dict(list(ordered.items())[:at]), "skill": doc["skill"],
            "promoted": False, **dict(list(ordered.items())[at:])}  # fmt: skip


def test_the_gate_figures_round_trip_and_render_in_words():
    doc = _with_gate_figures()
    report = RetrainReport.from_json(doc)
    assert json.dumps(report.to_json()) == json.dumps(doc)
    assert report.gate is not None and report.gate.edge is not None
    assert report.gate.edge.words() == "+0.024 [-0.011, +0.058] over always up"
    assert report.skill is not None
    assert report.skill["candidate"]["auc"].interval == (0.512, 0.549)
    text = render(report)
    assert "no skill shown: balanced accuracy +0.024 [-0.011, +0.058] over always up" in text
    assert "skill, balanced accuracy: +0.024 [-0.011, +0.058] over always up" in text
    assert "0.531 [0.512, 0.549]" in text  # AUC with its interval
    assert "0.244" in text  # the Brier score of always up, no interval
    assert "normal (1,200 rows)" in text
    page = render_html(report)
    assert "AUC" in page and "Brier" in page
    assert "0.531 <small>[0.512, 0.549]</small>" in page
    assert "+0.024 [-0.011, +0.058] over always up" in page


def test_a_stored_report_without_the_gate_figures_reads_and_renders():
    report = RetrainReport.from_json(REPORT)
    assert report.skill is None
    assert report.gate is not None and report.gate.edge is None and report.gate.regimes == {}
    assert "AUC" not in render(report)
    assert render_html(report).endswith("</html>\n")


# -- the diagnostics of a real retrain on a small history --------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory, sp500, nasdaq, vix) -> RetrainReport:
    """A retrain on the last six years of the bundled S&P 500 and NASDAQ, small models."""
    path = tmp_path_factory.mktemp("small") / "regimed.db"
    config = Config().replace(
        store=StoreConfig(path=str(path)),
        models=ModelsConfig(
            random_forest=RandomForestConfig(n_estimators=20),
            lightgbm=LightGBMConfig(n_estimators=30),
        ),
    )
    store_history(config, {"^GSPC": sp500.iloc[-1500:], "^IXIC": nasdaq.iloc[-1500:]}, vix)
    return retrain(config, trigger="manual")


def _diagnostics(report: RetrainReport) -> Diagnostics:
    assert report.diagnostics is not None
    return report.diagnostics


def test_the_reliability_bins_count_every_validation_row_and_the_naive_brier_is_p_1_minus_p(
    small,
):
    cal = _diagnostics(small).calibration
    assert cal is not None and small.split is not None
    assert sum(b.n for b in cal.bins) == small.split.validation_rows
    assert [b.low for b in cal.bins] == pytest.approx([k / 10 for k in range(10)])
    for b in cal.bins:
        if b.n:
            assert b.low <= b.mean_probability <= b.high
            assert 0 <= b.observed <= 1
        else:
            assert b.mean_probability is None and b.observed is None
    assert cal.base_rate is not None and cal.reference_brier is not None
    assert cal.reference_brier == pytest.approx(cal.base_rate * (1 - cal.base_rate), abs=1e-6)
    # the same Brier score as the gate's skill figure of the candidate
    assert small.skill is not None
    assert cal.brier == pytest.approx(small.skill["candidate"]["brier"].value, abs=1e-6)


def test_every_per_regime_score_has_an_interval_that_contains_it(small):
    diagnostics = _diagnostics(small)
    assert small.validation is not None
    scored = 0
    for regime in [*small.validation.per_regime, "overall"]:
        cell = (
            small.validation.ensemble.total
            if regime == "overall"
            else small.validation.ensemble.regime(regime)
        )
        for metric in ("accuracy", "balanced_accuracy"):
            value, interval = getattr(cell, metric), diagnostics.interval(regime, metric)
            if value is None:
                assert interval is None  # no interval on a null score
                continue
            assert interval is not None, (regime, metric)
            assert interval[0] <= value <= interval[1]
            scored += 1
    assert scored >= 4  # overall and at least one regime, both metrics


def test_the_timeline_holds_the_market_symbols_closes_and_regime_runs(small):
    line = _diagnostics(small).timeline
    window = small.windows.validation if small.windows else None
    assert line is not None and window is not None
    assert line.symbol == "^GSPC"
    assert line.days == tuple(sorted(line.days))
    assert window.first <= line.days[0] and line.days[-1] <= window.last
    assert len(line.close) == len(line.days) <= 400
    # the runs tile the period: consecutive, each a change of regime
    assert line.runs[0].first == line.days[0] and line.runs[-1].last == line.days[-1]
    for a, b in zip(line.runs, line.runs[1:], strict=False):
        assert a.last < b.first and a.regime != b.regime


def test_rolling_balanced_accuracy_is_sampled_across_the_validation_period(small):
    rolling = _diagnostics(small).rolling
    assert rolling is not None and small.windows is not None
    assert rolling.window_days == 63
    assert rolling.days[-1] == small.windows.validation.last
    assert "overall" in rolling.balanced_accuracy
    for series in rolling.balanced_accuracy.values():
        assert len(series) == len(rolling.days)
        assert all(v is None or 0 <= v <= 1 for v in series)


def test_the_diagnostics_are_small_and_round_trip(small):
    doc = small.to_json()
    assert RetrainReport.from_json(doc) == small
    assert json.dumps(RetrainReport.from_json(doc).to_json()) == json.dumps(doc)
    assert len(json.dumps(doc["diagnostics"])) < 40_000


def test_the_page_draws_each_diagnostic_with_round_ticks(small):
    page = render_html(small)
    for title in (
        "Reliability diagram of the ensemble",
        "over the validation period, by regime",
        "Rolling balanced accuracy per regime",
        "balanced accuracy [95%]",
        "Brier score",
    ):
        assert title in page
    assert "not in this report" not in page.split("<h2>Models</h2>")[0]
    text = render(small)  # `regimed retrain` prints the intervals and the two Brier scores
    assert "95% interval (ensemble)" in text and "calibration: Brier" in text


def test_the_cluster_section_round_trips_each_fits_spread_and_reads_older_fits():
    from daemon.training.placement import HOWS, Placement, TaskFit

    placement = Placement(
        "tcp://10.0.0.1:8786",
        2,
        4,
        (
            TaskFit("fit", "xgboost", None, 1.5, "partitions", ("tcp://a:1", "tcp://b:2")),
            TaskFit("fit", "random_forest", None, 0.7, "trees", ("tcp://a:1",)),
            TaskFit("fit", "mlp", "tcp://b:2", 2.0, "task", ("tcp://b:2",)),
            TaskFit("refit", "svm", None, None),
        ),
    )
    doc = json.loads(json.dumps(placement.to_json()))
    assert Placement.from_json(doc) == placement
    assert {f["how"] for f in doc["fits"]} == set(HOWS)
    # a report stored before fits said how: a task on its worker
    old = {"stage": "fit", "model": "mlp", "worker": "tcp://b:2", "seconds": 2.0}
    assert TaskFit.from_json(old) == TaskFit("fit", "mlp", "tcp://b:2", 2.0, "task", ("tcp://b:2",))
