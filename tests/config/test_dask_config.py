"""`training.dask_scheduler` and `training.dask_fallback_local`: defaults and validation."""

from __future__ import annotations

import pytest

from daemon.config import parse_config
from daemon.errors import ConfigError


def test_the_defaults_fit_on_this_machine_and_do_not_fall_back():
    training = parse_config("", env={}).training
    assert training.dask_scheduler == ""
    assert training.dask_fallback_local is False


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:8786", "tcp://scheduler.example:1", "tcp://[::1]:65535"]
)
def test_a_tcp_address_is_taken(address):
    text = f'[training]\ndask_scheduler = "{address}"\ndask_fallback_local = true\n'
    training = parse_config(text, env={}).training
    assert (training.dask_scheduler, training.dask_fallback_local) == (address, True)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:8786", "tcp://host", "tcp://host:0", "tcp://host:70000", "http://h:1"]
)
def test_a_bad_address_names_the_key_and_the_value(address):
    with pytest.raises(ConfigError, match=r"training\.dask_scheduler = .*tcp://host:port") as info:
        parse_config(f'[training]\ndask_scheduler = "{address}"\n', env={})
    assert address in str(info.value)


def test_the_environment_sets_the_scheduler():
    env = {"REGIMED_TRAINING__DASK_SCHEDULER": "tcp://10.0.0.5:8786"}
    assert parse_config("", env=env).training.dask_scheduler == "tcp://10.0.0.5:8786"
