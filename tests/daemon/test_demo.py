"""`regimed demo --exit-after-retrain`, the README's main command, run as a new user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import REGIMES
from daemon.store import Store

pytestmark = pytest.mark.integration


def test_demo_shows_the_whole_loop_on_the_bundled_history(tmp_path):
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--exit-after-retrain", "--metrics-port", "0",
         "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # no config.toml here: the built-in defaults, as on a fresh machine
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout, done.stderr
    # progress throughout
    for step in ("embedded Kafka broker", "replaying 11,321 bundled bars", "archive built",
                 "retraining", "consumed 11,321/11,321 bars"):  # fmt: skip
        assert step in err, step
    # the per-regime table, balanced accuracy beside the naive references, and the decision
    assert "validation (balanced accuracy; accuracy beside it)" in out
    for regime in (*REGIMES, "overall"):
        assert re.search(rf"^{regime}\s+[\d,]+\s", out, flags=re.M), regime
    assert "always up" in out and "prev. return" in out
    assert re.search(r"^decision: (PROMOTED|NOT PROMOTED) \(\w+\): .+", out, flags=re.M)
    report_path = Path(re.search(r"^report: (.+\.html)$", out, flags=re.M).group(1))
    assert report_path.is_file() and report_path.parent.parent == state
    assert "<svg" in report_path.read_text()
    # the state the daemon left: the replay stored, a registered model, one recorded run
    with Store.open(store_config(state), read_only=True) as store:
        assert store.bar_count() == 11_321  # every replayed bar, the VIX closes included
        (model,) = store.models()
        run = store.last_retrain_run()
    assert run is not None and run.trigger == "demo" and run.version == model.version
    assert json.loads(json.dumps(model.report))["training"]["effective_size_ratio"] == (
        pytest.approx(1.17, abs=5e-3)
    )


def store_config(state: Path):
    from daemon.config import StoreConfig

    return StoreConfig(path=str(state / "regimed.db"))
