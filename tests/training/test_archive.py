"""The rare-event archive: built from the bundled history with the live feature and label code."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.config import ArchiveConfig, Config
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import SampleRow
from daemon.errors import ConfigError
from daemon.pipeline.engine import history_rows
from daemon.store.sqlite import BatchResult
from daemon.training.archive import (
    ArchiveReport,
    Candidates,
    EventReport,
    Histories,
    build_archive,
    candidates,
    choose,
    load_bundled,
    quotas,
    render,
    select,
    stratified,
)

OFFLINE = (
    "2008 Financial Crisis",
    "2011 Debt Ceiling",
    "2015 China Devaluation",
    "2018 Volmageddon",
)
ONLINE_ONLY = (
    "2020 COVID Crash",
    "2020 COVID Recovery",
    "2022 Inflation Bear",
    "2023 Banking Crisis",
)


@pytest.fixture(scope="module")
def bundled() -> Histories:
    return load_bundled(Config())


@pytest.fixture(scope="module")
def pools(bundled) -> list[Candidates]:
    return candidates(Config(), bundled)


@pytest.fixture(scope="module")
def built(pools) -> list[EventReport]:
    archive = Config().archive
    return choose(archive.budget, archive.seed, pools)


@pytest.fixture
def store(backend_store):
    return backend_store


def with_archive(**changes) -> Config:
    return Config().replace(archive=dataclasses.replace(ArchiveConfig(), **changes))


def by_name(reports: list[EventReport]) -> dict[str, EventReport]:
    return {r.event.name: r for r in reports}


# -- what the bundled build holds ------------------------------------------------------------


def test_bundled_build_has_samples_for_2008_to_2018_and_none_for_2020_to_2023(built):
    reports = by_name(built)
    assert list(reports) == [*OFFLINE, *ONLINE_ONLY]
    for name in OFFLINE:
        assert reports[name].kept > 0, name
        assert not reports[name].no_data
    for name in ONLINE_ONLY:
        assert reports[name].kept == 0, name
        assert reports[name].no_data
        assert reports[name].quota == 0  # its share went to the events with data
    # Under the default budget every offline sample fits: 2 symbols x trading days in window.
    assert {n: reports[n].kept for n in OFFLINE} == {
        "2008 Financial Crisis": 292,
        "2011 Debt Ceiling": 86,
        "2015 China Devaluation": 84,
        "2018 Volmageddon": 38,
    }


def test_every_archive_sample_is_inside_its_event_window_and_labelled(built):
    for report in built:
        event = report.event
        symbols = {s.symbol for s in report.samples}
        assert symbols <= {"^GSPC", "^IXIC"}
        for s in report.samples:
            assert event.start.isoformat() <= s.ts <= event.end.isoformat()
            assert (s.source, s.event) == ("archive", event.name)
            assert s.label in (0, 1)
    crisis = by_name(built)["2008 Financial Crisis"]
    days = sorted({s.ts for s in crisis.samples})
    assert (days[0], days[-1]) == ("2008-09-02", "2009-03-31")  # 09-01 was Labor Day


def test_archive_samples_are_the_live_paths_samples_of_the_same_bars(built, sp500, nasdaq, vix):
    config = Config()
    for symbol, bars in (("^GSPC", sp500), ("^IXIC", nasdaq)):
        _, live = history_rows(config, symbol, bars, vix)
        by_day = {s.ts: s for s in live}
        archived = [s for r in built for s in r.samples if s.symbol == symbol]
        assert archived
        for s in archived:
            twin = by_day[s.ts]
            assert (s.regime, s.weight, s.label, s.feature_version) == (
                twin.regime,
                twin.weight,
                twin.label,
                twin.feature_version,
            )
            np.testing.assert_array_equal(s.features, twin.features)


def test_warm_up_bars_before_an_event_are_used_not_stored(built, bundled):
    # The 2018 event starts 4,800 bars into the history: its first day has a full feature row,
    # which it could not have if only the window's bars had been featurised.
    first = min(s.ts for s in by_name(built)["2018 Volmageddon"].samples)
    assert first == "2018-02-01"
    only_window = {
        s: bars[(bars.index >= "2018-02-01") & (bars.index <= "2018-03-31")]
        for s, bars in bundled.bars.items()
    }
    narrow = select(Config(), Histories(only_window, bundled.vix, "window only"))
    assert by_name(narrow)["2018 Volmageddon"].kept == 0


def test_each_sample_keeps_its_rule_regime_and_the_event_label_is_reported(built):
    crisis = by_name(built)["2008 Financial Crisis"]
    assert crisis.event.label == "crash"
    regimes = crisis.regimes()
    assert sum(regimes.values()) == crisis.kept
    assert regimes["crash"] > 0 and len(regimes) > 1  # rule regimes, not the event label


# -- store, idempotence ---------------------------------------------------------------------


def test_build_writes_one_batch_and_a_rebuild_changes_nothing(store):
    config = Config()
    first = build_archive(config, store, "bundled")
    assert first.result.samples_inserted == first.total == 500
    assert first.stale == 0
    assert store.bar_count() == 0  # the bars table is the live stream's
    meta, features = store.read_samples(source="archive")
    assert len(meta) == 500
    assert set(meta["event"].cat.categories) == set(OFFLINE)

    second = build_archive(config, store, "bundled")
    assert (second.result.samples_inserted, second.result.samples_replaced) == (0, 0)
    assert second.result.samples_unchanged == 500
    again, again_features = store.read_samples(source="archive")
    pd.testing.assert_frame_equal(meta, again)
    np.testing.assert_array_equal(features, again_features)
    assert store.sample_counts()["archive"] == {
        r: int((meta["regime"] == r).sum()) for r in meta["regime"].cat.categories
    }
    assert first.labels() == {
        **{n: "crash" for n in ("2008 Financial Crisis", "2018 Volmageddon")},
        **{n: "high_volatility" for n in ("2011 Debt Ceiling", "2015 China Devaluation")},
        "2020 COVID Crash": "crash",
        "2020 COVID Recovery": "recovery",
        "2022 Inflation Bear": "high_volatility",
        "2023 Banking Crisis": "high_volatility",
    }


def test_a_smaller_budget_subsamples_deterministically_and_removes_what_it_drops(
    store, pools, built
):
    earlier = [s for r in built for s in r.samples]
    covid = dataclasses.replace(earlier[0], ts="2020-03-16", event="2020 COVID Crash")
    store.write_batch(samples=[*earlier, covid])  # a full earlier build, with Yahoo's 2020
    small = with_archive(budget=100)
    report = build_archive(small, store, "bundled")
    kept = {e.event.name: e.kept for e in report.events}
    # 100 split 20:15:15:20 over the four events with data: 28.6, 21.4, 21.4, 28.6.
    assert kept == {
        "2008 Financial Crisis": 29,
        "2011 Debt Ceiling": 21,
        "2015 China Devaluation": 21,
        "2018 Volmageddon": 29,
        **dict.fromkeys(ONLINE_ONLY, 0),
    }
    assert report.total == 100
    assert report.result.samples_unchanged == 100
    # The dropped samples of the rebuilt events leave; the event with no bundled bars stays.
    assert report.result.samples_removed == 400
    assert report.stale == 1
    meta, _ = store.read_samples(source="archive")
    assert len(meta) == 101
    assert (meta["event"] == "2020 COVID Crash").sum() == 1
    text = render(report)
    assert "removed 400 archive samples of an earlier build" in text
    assert "note: 1 archive samples of events this source has no data for" in text
    again = choose(100, small.archive.seed, pools)
    assert [[s.ts + s.symbol for s in e.samples] for e in again] == [
        [s.ts + s.symbol for s in e.samples] for e in report.events
    ]


def test_budget_zero_keeps_every_sample_and_other_seeds_pick_other_samples(pools):
    reports = choose(0, 42, pools)
    assert sum(r.kept for r in reports) == 500
    assert all(r.quota is None for r in reports)
    assert "every sample" in render_of(reports)
    one, other = choose(40, 1, pools), choose(40, 2, pools)
    assert [r.kept for r in one] == [r.kept for r in other] == [11, 9, 9, 11, 0, 0, 0, 0]
    assert [s.ts for s in one[0].samples] != [s.ts for s in other[0].samples]


def render_of(reports: list[EventReport]) -> str:
    return render(
        ArchiveReport(
            "bundled", "the bundled history", {}, 0, tuple(reports), BatchResult(), 0, 0.0
        )
    )


# -- budget arithmetic -----------------------------------------------------------------------


def test_quotas_share_the_budget_by_largest_remainder():
    shares = [0.2, 0.15, 0.15, 0.2, 0.1, 0.1, 0.05, 0.05]
    assert quotas(1000, shares, [True] * 8) == [200, 150, 150, 200, 100, 100, 50, 50]
    assert quotas(2000, shares, [True] * 4 + [False] * 4) == [571, 429, 429, 571, 0, 0, 0, 0]
    assert quotas(10, [0.5, 0.25, 0.25], [True] * 3) == [5, 3, 2]  # tie: the earlier event
    assert quotas(10, [0.5, 0.5], [False, False]) == [0, 0]
    assert quotas(0, [1.0], [True]) == [0]


@given(
    st.integers(min_value=1, max_value=1_000_000),
    st.lists(st.floats(min_value=0.001, max_value=1), min_size=1, max_size=12),
    st.data(),
)
def test_quotas_sum_to_the_budget_and_stay_within_one_of_the_exact_share(budget, shares, data):
    has_data = data.draw(st.lists(st.booleans(), min_size=len(shares), max_size=len(shares)))
    result = quotas(budget, shares, has_data)
    present = sum(s for s, ok in zip(shares, has_data, strict=True) if ok)
    if not any(has_data):
        assert result == [0] * len(shares)
        return
    assert sum(result) == budget
    for q, s, ok in zip(result, shares, has_data, strict=True):
        exact = budget * s / present if ok else 0.0
        assert math.floor(exact) - 1 <= q <= math.ceil(exact) + 1
        assert ok or q == 0


def sample(ts: str, symbol: str = "^GSPC") -> SampleRow:
    return SampleRow(symbol, ts, "archive", "crash", 2.0, 1, np.ones(3), 1, "e")


def test_stratified_subsample_spans_the_event_and_depends_only_on_seed_and_name():
    days = [dt.date(2008, 9, 1) + dt.timedelta(days=i) for i in range(100)]
    pool = [sample(d.isoformat(), sym) for d in days for sym in ("^GSPC", "^IXIC")]
    picked = stratified(pool, 10, 42, "e")
    assert len(picked) == 10
    ordered = sorted(pool, key=lambda s: (s.ts, s.symbol))
    positions = [ordered.index(s) for s in picked]
    assert [p // 20 for p in positions] == list(range(10))  # one from each run of 20
    assert stratified(list(reversed(pool)), 10, 42, "e") == picked
    assert stratified(pool, 10, 43, "e") != picked or stratified(pool, 10, 42, "f") != picked
    assert len(stratified(pool, 500, 42, "e")) == 200
    assert stratified(pool, 0, 42, "e") == []


# -- sources and the command line ------------------------------------------------------------


def test_bundled_source_rejects_symbols_it_does_not_have():
    with pytest.raises(ConfigError) as info:
        load_bundled(with_archive(symbols=("^GSPC", "SPY")))
    assert str(info.value).startswith('archive.symbols[1] = "SPY": not in the bundled history')


def yfinance_download(tickers, start, end, **_):
    """`yfinance.download(..., group_by="ticker")` answered from the bundled files."""
    vix = read_vix_csv(bundled_path("vix"))
    source = {
        "^GSPC": read_bars_csv(bundled_path("sp500")),
        "^IXIC": read_bars_csv(bundled_path("nasdaq")),
        "^VIX": pd.DataFrame({"open": vix, "high": vix, "low": vix, "close": vix, "volume": 0.0}),
    }
    frames = {}
    for ticker in tickers:
        frame = source[ticker]
        frame = frame[(frame.index >= start) & (frame.index < end)].rename(columns=str.title)
        frames[ticker] = frame.rename_axis("Date")
    return pd.concat(
        frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"]
    )


def test_yahoo_source_fetches_with_a_lead_and_gives_the_bundled_samples(monkeypatch, built):
    import yfinance

    calls = []

    def download(tickers, start, end, **kwargs):
        calls.append((tuple(tickers), start, end))
        return yfinance_download(tickers, start, end)

    monkeypatch.setattr(yfinance, "download", download)
    from daemon.training.archive import load_yahoo

    histories = load_yahoo(Config(), today=dt.date(2030, 1, 1))
    assert calls == [(("^GSPC", "^IXIC", "^VIX"), "2006-09-02", "2023-05-30")]
    reports = select(Config(), histories)
    for ours, bundled_report in zip(reports, built, strict=True):
        assert [(s.symbol, s.ts, s.regime, s.label) for s in ours.samples] == [
            (s.symbol, s.ts, s.regime, s.label) for s in bundled_report.samples
        ]
        for a, b in zip(ours.samples, bundled_report.samples, strict=True):
            np.testing.assert_allclose(a.features, b.features, rtol=1e-6, atol=1e-9)


def test_cli_bundled_build_prints_every_event_and_is_idempotent(run_cli):
    result = run_cli("archive", "build")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    for name in OFFLINE:
        line = next(x for x in lines if x.startswith(name))
        assert "no data" not in line
    for name in ONLINE_ONLY:
        line = next(x for x in lines if x.startswith(name))
        assert "no data offline (data ends 2018-12-31)" in line
    assert "2008-09-01..2009-03-31  crash" in result.out
    assert "stored 500 archive samples: 500 new, 0 replaced, 0 unchanged" in result.out
    again = run_cli("archive", "build", "--source", "bundled")
    assert again.code == 0, again.err
    assert "stored 500 archive samples: 0 new, 0 replaced, 500 unchanged" in again.out


def test_cli_yahoo_without_network_exits_1_with_a_clear_message(run_cli, monkeypatch):
    import yfinance

    # What yfinance does when Yahoo cannot be reached: log errors, return an empty frame.
    monkeypatch.setattr(yfinance, "download", lambda *a, **k: pd.DataFrame())
    result = run_cli("archive", "build", "--source", "yahoo")
    assert result.code == 1
    assert "archive build --source yahoo: yfinance returned no data for ^GSPC, ^IXIC, ^VIX" in (
        result.err
    )
    assert "is Yahoo Finance reachable" in result.err

    def unreachable(*args, **kwargs):
        raise OSError("Could not resolve host: query2.finance.yahoo.com")

    monkeypatch.setattr(yfinance, "download", unreachable)
    result = run_cli("archive", "build", "--source", "yahoo")
    assert result.code == 1
    assert "Could not resolve host" in result.err


def test_cli_usage_and_configuration_errors_exit_2(run_cli, tmp_path):
    assert run_cli("archive").code == 2
    assert run_cli("archive", "build", "--source", "csv").code == 2
    path = tmp_path / "bad.toml"
    path.write_text('[archive]\nsymbols = ["SPY"]\n')
    result = run_cli("archive", "build", "--config", str(path))
    assert result.code == 2
    assert 'archive.symbols[0] = "SPY": not in the bundled history' in result.err


def test_cli_exits_1_when_no_event_has_data(run_cli, tmp_path):
    path = tmp_path / "late.toml"
    path.write_text(
        "[archive]\nevents = [\n"
        '  { name = "2020 COVID Crash", start = 2020-02-20, end = 2020-03-23, label = "crash",'
        " share = 1.0 },\n]\n"
    )
    result = run_cli("archive", "build", "--config", str(path))
    assert result.code == 1
    assert "no data offline: 2020 COVID Crash" in result.out
    assert "no archive event has data in the bundled history" in result.err
