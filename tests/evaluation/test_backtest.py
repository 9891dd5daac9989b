"""The backtest: a crash the rule sees one bar late costs exactly that bar, costs lower every
strategy's return by turnover times cost, no strategy uses the bar it trades on (the data from
a day on is changed and nothing decided before it moves), buy-and-hold's 2007-2009 drawdown
against the S&P 500's known one, and the figures' definitions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from daemon.config import Config
from daemon.config.backtest import BacktestConfig
from daemon.config.evaluate import EvaluateConfig
from daemon.errors import UsageError
from daemon.evaluation.backtest import BUY_AND_HOLD, Backtest, backtest, strategy_names
from daemon.evaluation.backtest.figures import drawdown, figures, sharpe
from daemon.evaluation.backtest.ledger import ledger
from daemon.evaluation.backtest.run import symbol_backtest
from daemon.evaluation.backtest.strategies import (
    model_exposure,
    model_volatility,
    trailing_volatility,
    volatility_exposure,
)
from daemon.training.archive import Histories

#: A short walk-forward (two yearly folds, one fast model) on S&P 500 bars 2003-2011.
WALK = EvaluateConfig(start=dt.date(2010, 1, 1), step="year", models=("logistic_regression",))
SMALL = Config().replace(
    evaluate=WALK, backtest=BacktestConfig(bootstrap_samples=100, cost_bps=5.0)
)


def _bars(closes: list[float], first: str = "2020-01-01") -> pd.DataFrame:
    c = np.asarray(closes, dtype=float)
    index = pd.DatetimeIndex(pd.bdate_range(first, periods=len(c)), name="date")
    return pd.DataFrame(
        {"open": c, "high": c, "low": c, "close": c, "volume": np.full(len(c), 1e6)}, index=index
    )


def _returns(result: Backtest, symbol: str, name: str) -> np.ndarray:
    equity = result.series[symbol].equity[name]
    return np.asarray(equity[1:] / equity[:-1] - 1.0)


def test_a_crash_the_rule_sees_one_bar_late_loses_exactly_that_bar() -> None:
    # Flat at 100, a 20% fall on bar 60 (the price rule calls it a crash at that close), two
    # more falls of 10%, then flat: the rule is in through bar 60 and out from bar 61.
    closes = [100.0] * 60 + [80.0, 72.0, 64.8] + [64.8] * 80
    bars = _bars(closes)
    config = Config().replace(backtest=BacktestConfig(bootstrap_samples=0))
    days = pd.DatetimeIndex(bars.index[40:-1])
    result, series = symbol_backtest(config, bars, None, days, {}, cost=0.0)
    assert series.regimes[60 - 40] == "crash"
    rule = series.equity["regimes"]
    assert rule[-1] == pytest.approx(0.8, abs=1e-12)
    falls = np.flatnonzero(np.diff(rule) != 0)
    assert [series.days[k + 1] for k in falls] == [str(bars.index[60].date())]
    hold = series.equity[BUY_AND_HOLD]
    assert hold[-1] == pytest.approx(0.648, abs=1e-12)
    overall = result["overall"]["strategies"]
    assert overall["regimes"]["max_drawdown"]["depth"] == pytest.approx(-0.2)
    assert overall[BUY_AND_HOLD]["max_drawdown"]["trough"] == str(bars.index[62].date())


@pytest.fixture(scope="module")
def walked(sp500: pd.DataFrame) -> dict[float, Backtest]:
    """The short walk-forward backtest of the S&P 500 without and with costs."""
    bars = sp500.loc["2003-01-01":"2011-12-31"]
    histories = Histories({"^GSPC": bars}, None, "S&P 500 2003-2011")
    free = backtest(SMALL, histories, cost_bps=0.0)
    charged = backtest(SMALL, histories, cost_bps=25.0)
    return {0.0: free, 25.0: charged}


def test_costs_lower_every_strategy_by_turnover_times_cost(walked: dict[float, Backtest]) -> None:
    free, charged = walked[0.0], walked[25.0]
    assert set(charged.series["^GSPC"].equity) == set(strategy_names())
    for name, held in charged.series["^GSPC"].held.items():
        turnover = np.abs(np.diff(held, prepend=0.0))
        lost = _returns(free, "^GSPC", name) - _returns(charged, "^GSPC", name)
        np.testing.assert_allclose(lost, turnover * 25e-4, atol=1e-12, err_msg=name)
        figures_ = charged.doc["symbols"]["^GSPC"]["overall"]["strategies"][name]
        assert figures_["costs"] == pytest.approx(turnover.sum() * 25e-4, abs=1e-5)
        # Every strategy trades: at least the first purchase.
        assert turnover.sum() > 0
    models = charged.doc["symbols"]["^GSPC"]["overall"]["strategies"]["model_all"]
    assert models["annual_turnover"] > 1.0  # the models move daily, not once


def _perturbed(bars: pd.DataFrame, day: str, seed: int) -> pd.DataFrame:
    """The bars with every price from `day` on scaled: the return of `day`'s bar reversed, the
    later ones shaken by a random walk; a different future."""
    out = bars.copy()
    later = out.index >= pd.Timestamp(day)
    first = int(np.argmax(later))
    close = out["close"].to_numpy()
    reverse = (close[first - 1] / close[first]) ** 2
    rng = np.random.default_rng(seed)
    walk = reverse * np.exp(np.cumsum(np.append(0.0, rng.normal(0.0, 0.03, later.sum() - 1))))
    for column in ("open", "high", "low", "close"):
        out.loc[later, column] = out.loc[later, column].to_numpy() * walk
    return out


def _decided_before(result: Backtest, symbol: str, day: str) -> dict[str, np.ndarray]:
    """Each strategy's exposure held through the bars up to and including `day`: what it
    decided at the closes before `day`."""
    series = result.series[symbol]
    through = sum(1 for d in series.days[1:] if d <= day)
    return {name: held[:through] for name, held in series.held.items()}


def test_no_strategy_uses_the_bar_it_trades_on(
    sp500: pd.DataFrame, walked: dict[float, Backtest]
) -> None:
    day = "2010-06-15"
    bars = sp500.loc["2003-01-01":"2011-12-31"]
    changed = _perturbed(bars, day, seed=7)
    other = backtest(SMALL, Histories({"^GSPC": changed}, None, "changed"), cost_bps=0.0)
    before = _decided_before(walked[0.0], "^GSPC", day)
    after = _decided_before(other, "^GSPC", day)
    assert len(before[BUY_AND_HOLD]) > 100
    for name in strategy_names():
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    # The change reaches what is decided at and after `day` (so the comparison can fail).
    later = {
        name: not np.array_equal(
            walked[0.0].series["^GSPC"].held[name], other.series["^GSPC"].held[name]
        )
        for name in ("regimes", "model_all", "volatility_target")
    }
    assert all(later.values()), later

    # ... and a rule that peeks at the bar it trades on is caught by the same comparison.
    def peeking(frame: pd.DataFrame) -> np.ndarray:
        c = frame["close"].to_numpy()
        return (np.append(c[1:] / c[:-1], 1.0) > 1.0).astype(float)

    through = len(before[BUY_AND_HOLD])
    start = bars.index.get_loc(pd.Timestamp(walked[0.0].series["^GSPC"].days[0]))
    cut = slice(start, start + through)
    assert not np.array_equal(peeking(bars)[cut], peeking(changed)[cut])


def test_buy_and_hold_falls_57_percent_from_2007_to_2009(sp500: pd.DataFrame) -> None:
    bars = sp500.loc["2007-01-01":"2009-12-31"]
    closes = bars["close"].to_numpy()
    days = [str(d.date()) for d in bars.index]
    book = ledger(closes, np.ones(len(closes)), cost=0.0)
    found = drawdown(book.net, days[1:], days[0])
    # The S&P 500 closed at 1565.15 on 2007-10-09 and at 676.53 on 2009-03-09: -56.8%.
    assert found["depth"] == pytest.approx(676.53 / 1565.15 - 1, abs=2e-3)
    assert (found["peak"], found["trough"]) == ("2007-10-09", "2009-03-09")
    assert found["recovered"] is None


def test_figures_of_a_known_path() -> None:
    # Up 20%, down 50%, up 50%, up to 125: above the peak again on the last bar.
    closes = np.array([100.0, 120.0, 60.0, 90.0, 125.0])
    days = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    book = ledger(closes, np.ones(5), cost=0.001)
    f = figures(book, days, "2020-01-01")
    assert book.turnover.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert f.total_return == pytest.approx(1.199 * 0.5 * 1.5 * 125 / 90 - 1.0)
    dd = f.max_drawdown
    assert dd["depth"] == pytest.approx(-0.5)
    assert (dd["peak"], dd["trough"], dd["recovered"]) == ("2020-01-02", "2020-01-03", "2020-01-07")
    assert f.time_in_market == 1.0 and f.costs == pytest.approx(0.001)
    net = book.net
    assert f.sharpe == pytest.approx(np.mean(net) / np.std(net, ddof=1) * math.sqrt(252))
    assert sharpe(np.zeros(10)) is None


def test_cash_earns_the_risk_free_rate_and_sharpe_is_in_excess_of_it() -> None:
    closes = np.array([100.0, 101.0, 99.0, 102.0])
    book = ledger(closes, np.array([0.0, 0.5, 0.0, 0.0]), cost=0.0, risk_free=0.0252)
    rf = 0.0252 / 252
    assert book.net.tolist() == pytest.approx([rf, 0.5 * (99 / 101 - 1) + 0.5 * rf, rf])


def test_volatility_target_scales_down_in_a_storm_and_never_levers() -> None:
    rng = np.random.default_rng(1)
    calm = rng.normal(0, 0.005, 100)
    storm = rng.normal(0, 0.04, 100)
    closes = 100 * np.exp(np.cumsum(np.concatenate([calm, storm])))
    exposure = volatility_exposure(trailing_volatility(closes, 21), 0.15)
    assert exposure[:21].tolist() == [1.0] * 21  # no forecast yet
    assert exposure[50:100].min() == 1.0  # calm: capped at 1, never above
    assert exposure[150:].max() < 0.5  # 0.04 a day is about 63% a year


def test_an_unknown_target_is_refused() -> None:
    with pytest.raises(UsageError, match="target 'momentum'"):
        backtest(SMALL, Histories({}, None, "none"), target="momentum")


def test_a_call_of_rising_volatility_or_a_drawdown_steps_out_and_one_of_up_steps_in() -> None:
    calls = np.array([1, 0, 1])
    assert model_exposure("direction", calls, 0.2).tolist() == [1.0, 0.2, 1.0]
    for target in ("volatility", "drawdown"):
        assert model_exposure(target, calls, 0.2).tolist() == [0.2, 1.0, 0.2]
    forecast = model_volatility(np.array([0.1, 0.1, np.nan]), calls, 1.25, 0.75)
    assert forecast[:2].tolist() == pytest.approx([0.125, 0.075]) and np.isnan(forecast[2])


def test_the_volatility_target_trades_its_models_calls_and_their_forecast(
    sp500: pd.DataFrame,
) -> None:
    bars = sp500.loc["2003-01-01":"2011-12-31"]
    result = backtest(SMALL, Histories({"^GSPC": bars}, None, "bundled"), target="volatility")
    assert result.doc["settings"]["target"] == "volatility:h=5:window=21"
    assert "rising volatility" in result.doc["strategies"]["model_all"]
    held = result.series["^GSPC"].held
    assert "volatility_target_model" in held
    out = held["model_all"] == SMALL.backtest.reduced_exposure
    assert 0 < out.mean() < 1  # out on the days rising volatility was called, in on the others
    # where the model calls rising volatility its forecast is higher: never more exposed
    assert (held["volatility_target_model"][out] <= held["volatility_target"][out] + 1e-12).all()


def test_event_windows_are_reported_where_the_data_has_them(
    walked: dict[float, Backtest],
) -> None:
    events = walked[25.0].doc["symbols"]["^GSPC"]["events"]
    # Trading 2010-2011: the 2011 debt-ceiling window only.
    assert [e["name"] for e in events] == ["2011 Debt Ceiling"]
    event = events[0]
    assert event["first_day"] >= "2011-07-01" and event["last_day"] <= "2011-08-31"
    hold = event["strategies"][BUY_AND_HOLD]
    assert hold["sharpe_difference"] is None
    rule = event["strategies"]["regimes"]
    low, high = rule["max_drawdown_difference_ci95"]
    assert low <= high


def test_settings_record_the_walk_forward_and_the_costs(walked: dict[float, Backtest]) -> None:
    settings = walked[25.0].doc["settings"]
    assert settings["cost_bps"] == 25.0 and settings["target"] == "direction:h=5:threshold=0"
    assert settings["models"] == ["logistic_regression"] and settings["step"] == "year"
    assert [f["cutoff"] for f in walked[25.0].doc["folds"]] == ["2010-01-01", "2011-01-01"]
    assert dataclasses.asdict(SMALL.backtest)["bootstrap_samples"] == 100
