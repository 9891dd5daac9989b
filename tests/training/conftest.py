"""Fixtures of the training tests: a small store on which a candidate shows skill."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import copy_store, learnable_store


@pytest.fixture(scope="session")
def small_db(tmp_path_factory, sp500, vix) -> Path:
    """The bundled S&P 500 from 2008 labelled by a feature's sign (`learnable_store`), built
    once per session; tests take a private copy (`db`)."""
    return learnable_store(tmp_path_factory.mktemp("learnable") / "regimed.db", sp500, vix)


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    """A private copy of `small_db` in the test's tmp_path."""
    return copy_store(small_db, tmp_path)
