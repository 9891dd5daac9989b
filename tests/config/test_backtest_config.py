"""The [backtest] section: defaults, and bad values refused with a message naming the key."""

from __future__ import annotations

import pytest

from daemon.config import Config, parse_config
from daemon.errors import ConfigError


def test_defaults() -> None:
    bt = Config().backtest
    assert (bt.reduced_exposure, bt.cost_bps, bt.risk_free) == (0.0, 5.0, 0.0)
    assert (bt.target_volatility, bt.volatility_window_bars) == (0.15, 21)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("reduced_exposure = 1.5", "backtest.reduced_exposure"),
        ("cost_bps = -1", "backtest.cost_bps"),
        ("target_volatility = 0", "backtest.target_volatility"),
        ("volatility_window_bars = 1", "backtest.volatility_window_bars"),
        ('block_days = "x"', "backtest.block_days"),
    ],
)
def test_bad_values_name_the_key(line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config(f"[backtest]\n{line}\n", env={})


def test_environment_override() -> None:
    config = parse_config("", env={"REGIMED_BACKTEST__REDUCED_EXPOSURE": "0.25"})
    assert config.backtest.reduced_exposure == 0.25
