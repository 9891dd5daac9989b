"""`regimed predictions`: stored predictions with their outcome and model version, as a table,
JSON or CSV, filtered by symbol and day; a bad --since exits 2 naming it."""

from __future__ import annotations

import csv
import io
import json

import pytest

from daemon.domain import LabelUpdate, PredictionRow


@pytest.fixture
def config_path(tmp_path, backend_store):
    """A store holding four predictions of two models, two of them labelled since, on each
    backend (the PostgreSQL one named by `store.url`)."""
    store = backend_store
    store.write_batch(
        predictions=[
            PredictionRow("SPY", "2020-03-20", "v1", 0.31, 0, "crash"),
            PredictionRow("QQQ", "2020-03-20", "v1", 0.62, 1, "crash"),
            PredictionRow("SPY", "2020-03-23", "v2", 0.71, 1, "crash"),
            PredictionRow("SPY", "2020-03-24", "v2", 0.55, 1, "recovery"),
        ]
    )
    # The labels of 03-20 matured: SPY went up (v1 said down), QQQ went up (v1 said up).
    store.write_batch(
        labels=[
            LabelUpdate("SPY", "2020-03-20", "live", 1),
            LabelUpdate("QQQ", "2020-03-20", "live", 1),
        ]
    )
    path = tmp_path / "config.toml"
    url = getattr(store, "url", "")
    path.write_text(f'[store]\npath = "{store.path}"\nurl = "{url}"\n')
    return str(path)


def test_json_lists_every_prediction_with_its_outcome_and_model(run_cli, config_path):
    result = run_cli("predictions", "--config", config_path, "--json")
    assert result.code == 0, result.err
    docs = json.loads(result.out)
    assert [(d["ts"], d["symbol"], d["model_version"]) for d in docs] == [
        ("2020-03-20", "QQQ", "v1"),
        ("2020-03-20", "SPY", "v1"),
        ("2020-03-23", "SPY", "v2"),
        ("2020-03-24", "SPY", "v2"),
    ]
    assert docs[1] == {
        "symbol": "SPY",
        "ts": "2020-03-20",
        "regime": "crash",
        "model_version": "v1",
        "probability": 0.31,
        "prediction": 0,
        "label": 1,
        "correct": False,
    }
    assert [(d["label"], d["correct"]) for d in docs] == [
        (1, True),
        (1, False),
        (None, None),
        (None, None),
    ]


def test_symbol_and_since_filter_and_csv_has_a_header(run_cli, config_path):
    result = run_cli(
        "predictions", "--config", config_path, "--symbol", "SPY", "--since", "2020-03-23",
        "--csv",
    )  # fmt: skip
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [(r["ts"], r["symbol"], r["label"], r["correct"]) for r in rows] == [
        ("2020-03-23", "SPY", "", ""),
        ("2020-03-24", "SPY", "", ""),
    ]
    assert list(rows[0]) == [
        "symbol", "ts", "regime", "model_version", "probability", "prediction", "label",
        "correct",
    ]  # fmt: skip


def test_the_table_says_right_wrong_or_pending_and_sums_up(run_cli, config_path):
    result = run_cli("predictions", "--config", config_path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "day", "symbol", "regime", "model", "p(up)", "pred", "label", "outcome",
    ]  # fmt: skip
    assert lines[1].split() == ["2020-03-20", "QQQ", "crash", "v1", "0.620", "1", "1", "right"]
    assert lines[2].split()[-1] == "wrong"
    assert lines[3].split()[-2:] == ["-", "pending"]
    assert lines[-1] == "4 predictions, 2 with their label, 50.0% right"


def test_nothing_matching_says_so(run_cli, config_path):
    result = run_cli("predictions", "--config", config_path, "--symbol", "IWM")
    assert (result.code, result.out) == (
        0,
        "no predictions stored (none match, or no champion has scored a live row yet)\n",
    )


@pytest.mark.parametrize("since", ["2020-13-01", "yesterday", "03/23/2020"])
def test_a_bad_since_exits_2_naming_it(run_cli, config_path, since):
    result = run_cli("predictions", "--config", config_path, "--since", since)
    assert result.code == 2
    assert f"argument --since: {since!r} is not a date; expected YYYY-MM-DD" in result.err
    assert "Traceback" not in result.err


def test_json_and_csv_together_is_a_usage_error(run_cli, config_path):
    result = run_cli("predictions", "--config", config_path, "--json", "--csv")
    assert result.code == 2
    assert "not allowed with argument" in result.err
