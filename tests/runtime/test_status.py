from __future__ import annotations

import datetime as dt
import json

import numpy as np

from daemon.config import Config, ScheduleConfig, StoreConfig
from daemon.domain import BarRow, SampleRow
from daemon.runtime.status import next_retrain, status
from daemon.store.sqlite import Store


def test_next_retrain_is_the_coming_saturday_2100_new_york():
    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)  # a Thursday
    fire = next_retrain(ScheduleConfig(), now)
    assert fire.isoformat() == "2026-11-28T21:00:00-05:00"
    summer = next_retrain(ScheduleConfig(), dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    assert summer.isoformat() == "2026-07-04T21:00:00-04:00"
    utc = next_retrain(ScheduleConfig(timezone="UTC", day_of_week="mon", hour=6), now)
    assert utc.isoformat() == "2026-11-30T06:00:00+00:00"


def write_some(store: Store) -> None:
    features = np.arange(47, dtype=np.float64)
    store.write_batch(
        bars=[
            BarRow("SPY", "2020-03-23", 228.0, 229.0, 218.0, 222.0, 1e8, "crash", 61.6, "vix"),
            BarRow("SPY", "2020-03-24", 234.0, 244.0, 233.0, 243.0, 1e8, "recovery", 53.9, "vix"),
        ],
        samples=[
            SampleRow("SPY", "2020-03-23", "live", "crash", 2.0, None, features, 1),
            SampleRow("SPY", "2020-03-24", "live", "recovery", 1.5, None, features, 1),
            SampleRow("SPY", "2008-10-10", "archive", "crash", 2.0, 1, features, 1),
        ],
        counters={"rejected_events": 3},
    )


def test_status_document_has_the_contract_keys(tmp_path):
    config = Config(store=StoreConfig(path=str(tmp_path / "s.db")))
    with Store.open(config.store) as store:
        write_some(store)
        doc = status(config, store, now=dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    assert set(doc) == {
        "bars",
        "samples",
        "rejected_events",
        "champion",
        "last_retrain",
        "next_retrain",
    }
    assert doc["bars"] == 2
    assert doc["samples"]["live"]["crash"] == 1
    assert doc["samples"]["live"]["recovery"] == 1
    assert doc["samples"]["archive"]["crash"] == 1
    assert doc["samples"]["archive"]["normal"] == 0
    assert doc["rejected_events"] == 3
    assert doc["champion"] is None
    assert doc["last_retrain"] is None
    assert dt.datetime.fromisoformat(doc["next_retrain"]).utcoffset() is not None
    json.dumps(doc)


def test_status_command_json_and_table(run_cli, tmp_path, backend_store):
    config = tmp_path / "c.toml"
    url = getattr(backend_store, "url", "")
    config.write_text(f'[store]\npath = "{backend_store.path}"\nurl = "{url}"\n')
    write_some(backend_store)
    result = run_cli("status", "--json", "--config", str(config))
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["bars"] == 2
    assert doc["rejected_events"] == 3
    table = run_cli("status", "--config", str(config))
    assert table.code == 0
    assert "bars stored                 2" in table.out
    assert "crash" in table.out
    assert "champion           none yet" in table.out


def test_status_without_a_store_says_where_it_looked(run_cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "missing.db"}"\n')
    result = run_cli("status", "--config", str(config))
    assert result.code == 2
    assert "store.path" in result.err
    assert "missing.db" in result.err
    assert not (tmp_path / "missing.db").exists()


def test_text_renderings_show_no_none_where_a_value_belongs():
    from daemon.report.retrain_text import render as render_retrain
    from daemon.runtime.status import render
    from daemon.training.report import RetrainReport

    doc = {
        "bars": 2,
        "rejected_events": 0,
        "samples": {"live": {}, "archive": {}},
        "champion": None,
        # a retrain that failed before it produced a model has no version
        "last_retrain": {
            "version": None,
            "trigger": "schedule",
            "finished_at": "2026-11-28T21:03:00+00:00",
            "promoted": False,
            "reason": "retrain failed: no model could be fitted",
        },
        "next_retrain": "2026-12-05T21:00:00-05:00",
    }
    text = render(doc)
    assert "last retrain       no model (schedule, finished" in text
    assert "None" not in text
    # a failed run's partial report
    text = render_retrain(RetrainReport.from_json({"version": None, "promoted": False}))
    assert "None" not in text
    assert "decision: NOT PROMOTED (failed): no reason recorded" in text


def test_without_a_champion_status_says_why_no_model_serves(run_cli, tmp_path):
    from daemon.registry.versions import Registry
    from daemon.runtime.status import no_champion_cause

    db = tmp_path / "s.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{db}"\n')
    reason = (
        "no skill shown: balanced accuracy +0.024 [-0.011, +0.058] over always up (the lower "
        "bound must be above min_edge 0)"
    )
    with Store(db) as store:
        write_some(store)
        assert no_champion_cause(store) == ""
        finished = dt.datetime(2026, 11, 28, 21, 3, tzinfo=dt.UTC)
        Registry(store).add_retrain_run(
            trigger="schedule",
            started_at=finished - dt.timedelta(minutes=3),
            finished_at=finished,
            promoted=False,
            reason=reason,
            version="20261128T210000Z",
            report={"outcome": "rejected"},
        )
        assert no_champion_cause(store) == f"; the last retrain (2026-11-28): {reason}"
    doc = json.loads(run_cli("status", "--json", "--config", str(config)).out)
    assert doc["champion"] is None
    assert doc["last_retrain"]["reason"] == reason
    table = run_cli("status", "--config", str(config)).out
    assert "live rows are stored but not scored until a retrain shows skill" in table
    assert f"why none          the last retrain: {reason}" in table
