"""The walk-forward evaluation: no look-ahead, shared folds, the JSON shape, the control, the
CLI. One small run (2006-2011, yearly folds, logistic regression) serves most tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.cli.main import main
from daemon.config import Config
from daemon.config.evaluate import EvaluateConfig
from daemon.domain import REGIMES
from daemon.errors import ConfigError
from daemon.evaluation import evaluate, load_default
from daemon.evaluation.data import Dataset, Fold, build_dataset, folds, symbol_of
from daemon.evaluation.run import Evaluation
from daemon.report.evaluation import render_text, write_report

SETTINGS = EvaluateConfig(
    start=dt.date(2006, 1, 1),
    step="year",
    models=("logistic_regression",),
    bootstrap_samples=200,
)
END = dt.date(2012, 1, 1)
NAMES = ("baseline", "weights", "balancing", "archive", "all")
NAIVE = ("always_up", "training_majority", "previous_return")


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(Config(), load_default())


@pytest.fixture(scope="module")
def plan(data: Dataset) -> list[Fold]:
    return folds(data, Config(), SETTINGS, END)


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    return evaluate(Config(), SETTINGS, end=END)


@pytest.fixture(scope="module")
def doc(evaluation: Evaluation) -> dict[str, Any]:
    return evaluation.doc


def test_the_cumulative_curve_is_balanced_accuracy_and_ends_at_the_overall_score(
    evaluation: Evaluation,
) -> None:
    line = evaluation.timeline
    series = line["cumulative_balanced_accuracy"]
    assert set(series) == {"baseline", "all", "always_up"}
    for values in series.values():
        assert len(values) == len(line["days"])
    # always up is a coin flip on balanced accuracy once both labels have been seen
    assert {v for v in series["always_up"] if v is not None} == {0.5}
    for name in ("baseline", "all"):
        overall = evaluation.doc["variants"][name]["overall"]["balanced_accuracy"]
        assert series[name][-1] == pytest.approx(overall, abs=1e-3)


def test_label_day_is_horizon_bars_after_the_feature_day(data: Dataset) -> None:
    assert (data.label_days > data.days).all()
    for symbol in np.unique(data.symbols):
        rows = np.flatnonzero(data.symbols == symbol)
        # Consecutive rows of one symbol are consecutive bars: the label day of row i is the
        # day of row i + 5 (the horizon) wherever both exist.
        assert (data.label_days[rows[:-5]] == data.days[rows[5:]]).all()


def test_no_fold_trains_on_a_label_known_at_or_after_its_cutoff(
    data: Dataset, plan: list[Fold]
) -> None:
    assert [f.cutoff for f in plan] == [dt.date(y, 1, 1) for y in range(2006, 2012)]
    for fold in plan:
        cutoff = np.datetime64(fold.cutoff, "D")
        assert (data.label_days[fold.train] < cutoff).all()
        assert (data.label_days[fold.archive] < cutoff).all()
        assert (data.days[fold.test] >= cutoff).all()
        assert (data.days[fold.test] < np.datetime64(fold.end, "D")).all()
        # The label horizon is purged: the last training feature day lies 5 bars before it.
        assert data.days[fold.train].max() < cutoff - np.timedelta64(5, "D")
        for name in fold.events:
            i = [p.event.name for p in data.events].index(name)
            known = data.event_known[i]
            assert known is not None and known < cutoff
            assert data.events[i].event.end < fold.cutoff


def test_the_archive_enters_only_after_its_events_and_their_labels_end(plan: list[Fold]) -> None:
    by_cutoff = {f.cutoff.year: f for f in plan}
    # The 2008 crisis window ends 2009-03-31: not in the 2009 fold, in the 2010 fold.
    assert by_cutoff[2009].events == () and len(by_cutoff[2009].archive) == 0
    assert by_cutoff[2010].events == ("2008 Financial Crisis",)
    assert len(by_cutoff[2010].archive) > 0


def test_every_variant_is_scored_on_the_same_test_bars(doc: dict[str, Any]) -> None:
    counts = {
        name: (v["overall"]["n"], tuple(v["per_regime"][r]["n"] for r in REGIMES))
        for name, v in doc["variants"].items()
    }
    assert len(set(counts.values())) == 1
    assert doc["variants"]["baseline"]["overall"]["n"] == sum(f["test_rows"] for f in doc["folds"])


def test_json_shape(doc: dict[str, Any]) -> None:
    assert set(doc["variants"]) == {*NAMES, *NAIVE}
    for variant in doc["variants"].values():
        assert set(variant["per_regime"]) == set(REGIMES)
        for group in [variant["overall"], *variant["per_regime"].values()]:
            assert {"n", "accuracy", "balanced_accuracy", "ci95"} <= set(group)
            if group["ci95"] is not None:
                low, high = group["ci95"]
                assert low <= group["balanced_accuracy"] <= high
    assert set(doc["controls"]["shuffled_labels"]) >= {"balanced_accuracy"}
    assert set(doc["differences"]) == set(NAMES[1:])
    json.dumps(doc)  # serializable as it stands
    assert "balanced accuracy" in render_text(doc)


def test_the_shuffled_label_control_is_near_chance(doc: dict[str, Any]) -> None:
    control = doc["controls"]["shuffled_labels"]
    assert control["folds"] == 6
    assert abs(control["balanced_accuracy"] - 0.5) < 0.05


def test_always_up_has_balanced_accuracy_one_half(doc: dict[str, Any]) -> None:
    assert doc["variants"]["always_up"]["overall"]["balanced_accuracy"] == 0.5


def test_report_files_are_written(tmp_path: Path) -> None:
    evaluation = evaluate(
        Config(), dataclasses.replace(SETTINGS, start=dt.date(2010, 1, 1)), end=END
    )
    written = write_report(evaluation, tmp_path / "out")
    assert {p.name for p in written} >= {"evaluation.md", "evaluation.html"}
    page = (tmp_path / "out" / "evaluation.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 2 and "shuffled within each fold" in page
    assert "balanced_accuracy.svg" in (tmp_path / "out" / "evaluation.md").read_text("utf-8")
    assert "Cumulative balanced accuracy over the test period" in page
    assert (tmp_path / "out" / "cumulative_balanced_accuracy.svg").exists()


def test_symbol_of_strips_the_extensions() -> None:
    assert symbol_of("/data/SPY.csv.gz") == "SPY"
    assert symbol_of("QQQ.csv") == "QQQ"


def test_config_names_the_bad_model() -> None:
    with pytest.raises(ConfigError, match=r"evaluate.models\[1\] = \"nope\""):
        EvaluateConfig(models=("lightgbm", "nope"))


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "nope"], "unknown model 'nope'"),
        (["--start", "2030-01-01"], "evaluate.start = 2030-01-01"),
        (["--start", "soon"], "--start soon"),
        (["--vix", "vix.csv"], "--vix needs --bars"),
    ],
)
def test_cli_usage_errors_exit_2(
    argv: list[str], message: str, config_file: str, tmp_path: Path, capsys: Any
) -> None:
    code = main(["evaluate", "--config", config_file, "--out", str(tmp_path / "o"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_json(config_file: str, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "report"
    argv = ["evaluate", "--config", config_file, "--out", str(out), "--json", "--step", "year"]
    argv += ["--start", "2010-01-01", "--end", "2012-01-01", "--models", "logistic_regression"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["models"] == ["logistic_regression"]
    assert len(doc["folds"]) == 2
    assert (out / "evaluation.html").exists() and (out / "evaluation.md").exists()


def test_cli_target_evaluates_that_target_and_names_its_references(
    config_file: str, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "report"
    argv = ["evaluate", "--config", config_file, "--out", str(out), "--step", "year"]
    argv += ["--start", "2010-01-01", "--end", "2011-01-01", "--models", "logistic_regression"]
    assert main([*argv, "--target", "volatility"]) == 0
    text = capsys.readouterr().out
    assert "target volatility:h=5:window=21" in text
    assert "always 1 (rising volatility)" in text and "always_up" not in text
    assert "target volatility:h=5:window=21" in (out / "evaluation.md").read_text()
    assert main([*argv, "--target", "up"]) == 2
    assert "invalid choice: 'up'" in capsys.readouterr().err


def _drifting(n: int = 3000, switch: int = 2000) -> Dataset:
    """One symbol's synthetic rows whose label rule changes at row `switch`: before it the
    label follows feature 0 (weakly), from it on feature 1 (exactly)."""
    from daemon.pipeline.features.defs import FEATURE_NAMES

    rng = np.random.default_rng(11)
    days = np.busday_offset("2000-01-03", np.arange(n), roll="forward").astype("datetime64[D]")
    X = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    early = X[:, 0] + 4.0 * rng.normal(size=n) > 0
    y = np.where(np.arange(n) < switch, early, X[:, 1] > 0).astype(np.int8)
    return Dataset(
        symbols=np.full(n, "SYN"),
        days=days,
        label_days=np.busday_offset(days, 5).astype("datetime64[D]"),
        regimes=np.full(n, "normal"),
        y=y,
        X=X,
        events=(),
        event_known=(),
        position={},
    )


def test_with_refit_each_fold_predicts_with_members_that_saw_its_newest_training_rows() -> None:
    from daemon.evaluation.walk import run_folds

    data = _drifting()
    # train on rows whose label day is before row 2500's day; the newest fifth of them (from
    # about row 2000) weighs the vote and, refit, trains too; test on rows 2500-2999
    cutoff = data.days[2500].astype(dt.date)
    test = np.arange(2500, 3000)
    fold = Fold(cutoff, dt.date(2030, 1, 1), np.flatnonzero(data.label_days < data.days[2500]),
                np.empty(0, np.int64), test, ())  # fmt: skip
    settings = dataclasses.replace(SETTINGS, control_folds=1, bootstrap_samples=0)
    accuracy = {}
    for refit in (False, True):
        config = Config()
        config = config.replace(training=dataclasses.replace(config.training, refit=refit))
        pred = run_folds(data, [fold], config, settings).preds["baseline"]
        accuracy[refit] = float((pred == data.y[test]).mean())
    # fitted on rows before the switch only, the members know nothing of feature 1's rule
    assert accuracy[False] < 0.6
    # refit on every row the fold knows, they learned it from the newest training rows
    assert accuracy[True] > accuracy[False] + 0.1, accuracy
