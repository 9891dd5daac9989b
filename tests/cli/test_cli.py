from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from daemon.config import RegimeConfig
from daemon.data.history import bundled_path, read_bars_csv
from daemon.pipeline.regime import label_history

DATA = Path(__file__).resolve().parents[1] / "data"
SP500 = str(bundled_path("sp500"))
VIX = str(bundled_path("vix"))


def test_regimes_labels_every_bundled_day_and_summarises(run_cli):
    result = run_cli("regimes", "--bars", SP500, "--vix", VIX)
    assert result.code == 0, result.err
    frame = pd.read_csv(io.StringIO(result.out), keep_default_na=False)
    assert list(frame.columns) == ["date", "close", "vix", "vix_source", "regime"]
    assert len(frame) == 5031
    assert frame.set_index("date").loc["2018-02-05", "regime"] == "crash"
    assert "Regimes of 5031 trading days, 1999-01-04 to 2018-12-31" in result.err
    for regime in ("low_volatility", "normal", "high_volatility", "crash", "recovery"):
        count = int((frame["regime"] == regime).sum())
        assert f"{regime:<16} {count:>6}" in result.err


def test_regimes_on_a_yfinance_export_gives_the_rule_labels(run_cli, tmp_path):
    out = tmp_path / "labels.csv"
    result = run_cli(
        "regimes", "--bars", str(DATA / "yfinance_gspc_2018.csv"), "--vix", VIX, "--out", str(out)
    )
    assert result.code == 0, result.err
    assert "Regimes of 251 trading days" in result.out
    written = pd.read_csv(out, keep_default_na=False)
    bars = read_bars_csv(DATA / "yfinance_gspc_2018.csv")
    from daemon.data.history import read_vix_csv

    expected = label_history(RegimeConfig(), bars["close"], read_vix_csv(VIX))
    assert list(written["regime"]) == [r or "" for r in expected["regime"]]
    assert list(written["vix_source"]) == list(expected["vix_source"])
    assert written["vix"].to_numpy() == pytest.approx(expected["vix"].to_numpy(), abs=5e-5)


def test_regimes_without_vix_uses_the_flagged_proxy(run_cli, tmp_path):
    out = tmp_path / "labels.csv"
    assert run_cli("regimes", "--bars", SP500, "--out", str(out)).code == 0
    frame = pd.read_csv(out, keep_default_na=False).set_index("date")
    assert set(frame["vix_source"].iloc[21:]) == {"proxy"}
    assert frame.loc["2008-10-10", "regime"] == "crash"


def test_regimes_reads_its_thresholds_from_the_configuration(run_cli, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[regime]\nvix_crash = 40.0\n")
    out = tmp_path / "labels.csv"
    result = run_cli(
        "regimes", "--config", str(config), "--bars", SP500, "--vix", VIX, "--out", str(out)
    )
    assert result.code == 0, result.err
    frame = pd.read_csv(out, keep_default_na=False).set_index("date")
    assert frame.loc["2018-02-05", "regime"] == "high_volatility"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Date,Open,High,Low,Close\n2020-01-02,1,1,1,1\n", "row 1: missing column 'Volume'"),
        ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,x,1\n", "row 2, column Close: 'x'"),
        ("Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,-1,1\n", "row 2, column Close: price"),
        (
            "Date,Open,High,Low,Close,Volume\n2020-01-03,1,1,1,1,1\n2020-01-02,1,1,1,1,1\n",
            "row 3, column Date: 2020-01-02 comes after 2020-01-03",
        ),
        (
            "Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,1\n2020-01-02,1,1,1,1,1\n",
            "row 3, column Date: duplicate date 2020-01-02",
        ),
    ],
)
def test_regimes_on_a_malformed_csv_exits_2_naming_file_row_column(
    run_cli, tmp_path, text, fragment
):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = run_cli("regimes", "--bars", str(path))
    assert result.code == 2
    assert f"{path}, {fragment}" in result.err
    assert result.out == ""


def test_usage_errors_exit_2(run_cli):
    result = run_cli("regimes")
    assert result.code == 2
    assert "the following arguments are required: --bars" in result.err
    assert run_cli("no-such-command").code == 2
    assert run_cli().code == 2


def test_check_config_prints_effective_config_with_secrets_masked(run_cli, monkeypatch):
    monkeypatch.setenv("REGIMED_KAFKA__SASL_PLAIN_PASSWORD", "hunter2")
    monkeypatch.setenv("REGIMED_METRICS__PORT", "9200")
    result = run_cli("check-config")
    assert result.code == 0, result.err
    assert "# effective configuration from built-in defaults" in result.out
    assert "REGIMED_KAFKA__SASL_PLAIN_PASSWORD" in result.out
    assert 'sasl_plain_password = "********"' in result.out
    assert "port = 9200" in result.out
    assert "hunter2" not in result.out + result.err


def test_check_config_on_the_shipped_file(run_cli):
    shipped = Path(__file__).resolve().parents[2] / "config.toml"
    result = run_cli("check-config", str(shipped))
    assert result.code == 0, result.err
    assert f"from {shipped}" in result.out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[regime]\nvix_crash = "high"\n', 'regime.vix_crash = "high": expected a number'),
        ("[kafka]\ntopik = 'x'\n", "kafka.topik: unknown key"),
        ("[kafka\n", "not valid TOML"),
    ],
)
def test_check_config_bad_value_exits_2_naming_the_key(run_cli, tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("check-config", str(path))
    assert result.code == 2
    assert message in result.err
    assert str(path) in result.err
    # The same message for any command given the file with --config.
    assert message in run_cli("regimes", "--config", str(path), "--bars", SP500).err


def test_check_config_missing_file_exits_2(run_cli, tmp_path):
    result = run_cli("check-config", str(tmp_path / "missing.toml"))
    assert result.code == 2
    assert "missing.toml: no such file" in result.err


def console_script() -> str:
    found = Path(sys.executable).with_name("regimed")
    return str(found) if found.exists() else (shutil.which("regimed") or "regimed")


@pytest.mark.integration
def test_installed_console_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    help_text = subprocess.run(
        [console_script(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert "regimes" in help_text and "check-config" in help_text
    bad = tmp_path / "bad.toml"
    bad.write_text("[regime]\nvix_normal = 30\n")
    done = subprocess.run(
        [console_script(), "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert "regime.vix_high = 25: expected regime.vix_normal (30)" in done.stderr
    piped = subprocess.run(
        f"'{console_script()}' regimes --bars '{SP500}' | head -3",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert piped.stdout.splitlines()[0] == "date,close,vix,vix_source,regime"
    assert "Traceback" not in piped.stderr


def all_parsers(parser=None, name="regimed"):
    """(command line, parser) for regimed and every command and action under it."""
    import argparse

    from daemon.cli.main import build_parser

    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


def test_every_help_text_renders():
    seen = []
    for name, parser in all_parsers():
        text = parser.format_help()  # a bare % in a help string raises here
        assert "%%" not in text and "%(" not in text, name
        seen.append(name)
    assert {"regimed evaluate", "regimed models verify", "regimed archive build"} <= set(seen)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{c}", "--log-level", "DEBUG", "{cmd}"],
        ["{cmd}", "--config", "{c}", "--log-level", "DEBUG"],
        ["--log-level", "DEBUG", "{cmd}", "--config", "{c}"],
        ["--config", "{c}", "{cmd}", "--log-level", "DEBUG"],
    ],
)
@pytest.mark.parametrize("command", ["status", "models list", "archive build", "check-config"])
def test_config_and_log_level_mean_the_same_before_and_after_the_command(argv, command):
    from daemon.cli.main import build_parser

    line = [a for part in argv for a in (command.split() if part == "{cmd}" else [part])]
    args = build_parser().parse_args([a.replace("{c}", "x.toml") for a in line])
    assert (args.config, args.log_level) == ("x.toml", "DEBUG")
    args = build_parser().parse_args(command.split())
    assert (args.config, args.log_level) == (None, "INFO")


def test_config_before_the_command_is_the_one_used(run_cli, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[metrics]\nport = 9300\n")
    before = run_cli("--config", str(good), "check-config")
    after = run_cli("check-config", "--config", str(good))
    assert before.code == after.code == 0, before.err
    assert before.out == after.out
    assert "port = 9300" in before.out and f"from {good}" in before.out
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling.target_mix]\ncrash = 0.15\n")
    for line in (["--config", str(bad), "check-config"], ["check-config", "--config", str(bad)]):
        result = run_cli(*line)
        assert result.code == 2, line
        assert f"{bad}: sampling.target_mix" in result.err


def test_check_config_changed_prints_only_what_differs(run_cli, tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[metrics]\nport = 9300\n[kafka]\ntopic = "market.bars"\n')
    monkeypatch.setenv("REGIMED_WEIGHTS__REGIME__CRASH", "2.5")
    result = run_cli("check-config", "--changed", str(path))
    assert result.code == 0, result.err
    body = [line for line in result.out.splitlines() if line and not line.startswith("#")]
    assert body == ["[metrics]", "port = 9300", "[weights]", "[weights.regime]", "crash = 2.5"]
    monkeypatch.delenv("REGIMED_WEIGHTS__REGIME__CRASH")
    shipped = Path(__file__).resolve().parents[2] / "config.toml"
    result = run_cli("check-config", "--changed", str(shipped))
    assert result.code == 0
    assert "nothing: every value is the built-in default" in result.out


def test_a_busy_metrics_port_is_one_error_line_and_exit_2(run_cli, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            f'[metrics]\nport = {port}\n[store]\npath = "{tmp_path / "r.db"}"\n'
            '[kafka]\nbootstrap_servers = ["127.0.0.1:1"]\n'
        )
        result = run_cli("run", "--config", str(config), "--timeout", "5")
    assert result.code == 2
    assert result.err == (
        f"error: metrics.port = {port}: cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["regimes", "--bars", SP500],
        ["evaluate", "--step", "year"],
        ["report"],
    ],
)
def test_out_into_a_missing_folder_is_one_error_line_and_exit_2(run_cli, tmp_path, command):
    from daemon.config import StoreConfig
    from daemon.store.sqlite import Store

    with Store.open(StoreConfig(path=str(tmp_path / "regimed.db"))):
        pass  # `report` reads a store: an empty one is enough to get to --out
    out = tmp_path / "missing" / "out.file"
    result = run_cli(*command, "--out", str(out))
    assert result.code == 2
    assert result.err == f"error: --out {out}: no directory '{out.parent}' to write into\n"
    assert result.out == ""
    assert not out.parent.exists()
