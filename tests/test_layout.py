"""The layout keeps its rules: imports point down the data flow with no exception, every
exception lives in daemon/errors.py, an underscore module is imported only inside its own
package, and every package's `__init__` lists its public names."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_ignores_no_import():
    """tests/test_project.py runs the contract; this keeps it whole: an upward import is
    inverted, never listed as an exception."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in settings["contracts"] if c["type"] == "layers"]
    assert layers.get("ignore_imports", []) == []
    assert "unmatched_ignore_imports_alerting" not in layers
