from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import Config, RegimeShares, Secret, load_config, parse_config
from daemon.errors import ConfigError, RegimedError

REPO = Path(__file__).resolve().parents[2]


def parse(text: str, **env: str) -> Config:
    return parse_config(text, env=env)


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **env)
    return str(info.value)


def test_shipped_config_toml_is_exactly_the_defaults():
    shipped = parse((REPO / "config.toml").read_text())
    assert shipped == Config()


def test_defaults_follow_the_design():
    c = Config()
    assert c.kafka.topic == "market.bars"
    assert c.kafka.effective_dlq_topic == "market.bars.dlq"
    assert (c.metrics.host, c.metrics.port) == ("127.0.0.1", 9108)
    assert (c.schedule.day_of_week, c.schedule.hour, c.schedule.minute) == ("sat", 21, 0)
    r = c.regime
    assert (r.price_crash_drop, r.price_crash_lookback_bars) == (0.15, 10)
    assert (r.recovery_window_bars, r.recovery_rebound) == (63, 0.10)
    assert (r.vix_crash, r.vix_high, r.vix_normal) == (35, 25, 15)
    assert (r.vix_max_staleness_days, r.vix_proxy_window_bars, r.vix_proxy_scale) == (5, 21, 1.2)
    assert c.sampling.target_mix.as_dict() == {
        "low_volatility": 0.2,
        "normal": 0.4,
        "high_volatility": 0.2,
        "crash": 0.1,
        "recovery": 0.1,
    }
    assert c.weights.regime.as_dict() == {
        "low_volatility": 0.8,
        "normal": 1.0,
        "high_volatility": 1.3,
        "crash": 2.0,
        "recovery": 1.5,
    }


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600.0), ("30m", 1800.0), ("1h30m", 5400.0), ("0s", 0.0)]
)
def test_alert_repeat_interval_reads_as_alertmanager_writes_it(text, seconds):
    config = parse_config(f'[alerts]\nrepeat_interval = "{text}"\n')
    assert config.alerts.repeat_interval_seconds == seconds


def test_config_is_frozen():
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.regime.vix_crash = 40.0  # type: ignore[misc]


def test_wrong_type_names_key_value_and_expectation():
    assert error_of('[regime]\nvix_crash = "high"\n') == (
        'regime.vix_crash = "high": expected a number'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[regime]\nprice_crash_drop = 1.5\n", "regime.price_crash_drop = 1.5: expected a number"),
        ("[kafka]\nmax_poll_records = 0\n", "kafka.max_poll_records = 0: expected a number >= 1"),
        ("[kafka]\nmax_poll_records = 1.5\n", "kafka.max_poll_records = 1.5: expected a whole"),
        ("[metrics]\nport = 70000\n", "metrics.port = 70000: expected a number >= 0 and <= 65535"),
        (
            '[kafka]\nsecurity_protocol = "TLS"\n',
            'kafka.security_protocol = "TLS": expected one of',
        ),
        (
            '[kafka]\nbootstrap_servers = "a:1"\n',
            'kafka.bootstrap_servers = "a:1": expected a list',
        ),
        ("[kafka]\nbootstrap_servers = [1]\n", "kafka.bootstrap_servers[0] = 1: expected a string"),
        ('[kafka]\nbootstrap_servers = ["nohost"]\n', "kafka.bootstrap_servers[0]"),
        ('[schedule]\ntimezone = "Mars/Olympus"\n', 'schedule.timezone = "Mars/Olympus"'),
        ('[schedule]\nday_of_week = "saturday"\n', 'schedule.day_of_week = "saturday"'),
        ("[schedule]\nhour = 24\n", "schedule.hour = 24: expected a number >= 0 and <= 23"),
        ('[alerts]\nwebhooks = ["ftp://x"]\n', "alerts.webhooks[0]: expected an http"),
        ("[regime]\nvix_high = 40\n", "regime.vix_high = 40"),
        ("[regime]\nvix_crash = nan\n", "regime.vix_crash = nan: expected a finite number"),
        ("[sampling.target_mix]\ncrash = 0.5\n", "sampling.target_mix = {"),
        ("[weights.regime]\ncrash = 0\n", "weights.regime.crash = 0: expected a number > 0"),
        ("[label]\nhorizon_bars = true\n", "label.horizon_bars = true: expected a whole number"),
        ("regime = 3\n", "regime = 3: expected a table"),
        ('[alerts]\nrepeat_interval = "1 hour"\n', 'alerts.repeat_interval = "1 hour": expected a'),
        ("[alerts]\nrepeat_interval = 3600\n", "alerts.repeat_interval = 3600: expected a string"),
    ],
)
def test_bad_values_name_the_key(text, message):
    assert message in error_of(text)


def test_unknown_keys_are_errors_not_ignored():
    assert error_of("[regime]\nvix_crsh = 40\n").startswith("regime.vix_crsh: unknown key")
    assert error_of("[regmie]\n").startswith("regmie: unknown key")
    assert error_of("[sampling.target_mix]\npanic = 0.1\n").startswith(
        "sampling.target_mix.panic: unknown key"
    )


def test_invalid_toml_is_a_config_error():
    assert "not valid TOML" in error_of("[kafka\n")


def test_environment_overrides_every_kind_of_key():
    c = parse(
        "[regime]\nvix_crash = 30\n",
        REGIMED_REGIME__VIX_CRASH="40",
        REGIMED_KAFKA__BOOTSTRAP_SERVERS="b1:9092, b2:9093",
        REGIMED_KAFKA__MAX_POLL_RECORDS="1000",
        REGIMED_KAFKA__SASL_PLAIN_PASSWORD="hunter2",
        REGIMED_SAMPLING__TARGET_MIX__CRASH="0.15",
        REGIMED_SAMPLING__TARGET_MIX__NORMAL="0.35",
        REGIMED_STORE__PATH="/var/lib/regimed/regimed.db",
        REGIMED_CONFIG="/ignored/here.toml",
        OTHER_VAR="x",
    )
    assert c.regime.vix_crash == 40.0
    assert c.kafka.bootstrap_servers == ("b1:9092", "b2:9093")
    assert c.kafka.max_poll_records == 1000
    assert c.kafka.sasl_plain_password.get_secret_value() == "hunter2"
    assert c.sampling.target_mix.crash == 0.15
    assert c.store.path == "/var/lib/regimed/regimed.db"


def test_environment_errors_name_the_variable():
    msg = error_of("", REGIMED_REGIME__VIX_CRASH="high")
    assert msg == 'regime.vix_crash = "high" (from REGIMED_REGIME__VIX_CRASH): expected a number'
    assert error_of("", REGIMED_REGIME__VIX_CRSH="1") == (
        "REGIMED_REGIME__VIX_CRSH: no configuration key regime.vix_crsh"
    )
    assert "expected REGIMED_<SECTION>__<KEY>" in error_of("", REGIMED_KAFKA="x")
    assert "is a section, not a key" in error_of("", REGIMED_SAMPLING__TARGET_MIX="x")


def test_an_override_that_breaks_a_check_across_keys_is_named():
    msg = error_of("", REGIMED_SAMPLING__TARGET_MIX__CRASH="0.15")
    assert "expected shares that sum to 1 (they sum to 1.05)" in msg
    assert msg.endswith("(environment overrides here: REGIMED_SAMPLING__TARGET_MIX__CRASH)")
    msg = error_of("", REGIMED_KAFKA__SESSION_TIMEOUT_MS="2000")
    assert "kafka.heartbeat_interval_ms = 3000: expected less than" in msg
    assert "REGIMED_KAFKA__SESSION_TIMEOUT_MS" in msg
    assert "REGIMED_" not in error_of("[kafka]\nsession_timeout_ms = 2000\n")
    assert "REGIMED_ARCHIVE__SYMBOLS" in error_of("", REGIMED_ARCHIVE__SYMBOLS="SPY,SPY")
    assert error_of("", REGIMED_MODELS__MLP__HIDDEN_LAYER_SIZES="64,x") == (
        'models.mlp.hidden_layer_sizes[1] = "x" (from REGIMED_MODELS__MLP__HIDDEN_LAYER_SIZES): '
        "expected a whole number"
    )


def test_a_partial_table_keeps_the_defaults_of_its_section():
    # weights.regime defaults to the loss weights, not to RegimeShares' own (the target mix).
    c = parse("", REGIMED_WEIGHTS__REGIME__CRASH="2.5")
    assert c.weights.regime.as_dict() == {**Config().weights.regime.as_dict(), "crash": 2.5}
    assert parse("[weights.regime]\ncrash = 2.5\n") == c


def documented_env_examples() -> list[tuple[str, dict[str, str]]]:
    """Every `REGIMED_X=value` in the docs, README, config.toml and deploy/, grouped by line
    (a line that sets several variables is one example)."""
    files = [REPO / "README.md", REPO / "config.toml"]
    files += sorted((REPO / "docs").rglob("*.md")) + sorted(
        p for p in (REPO / "deploy").rglob("*") if p.is_file()
    )
    examples = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = re.findall(r"\b(REGIMED_[A-Z0-9_]+)=([^\s`|);]*)", line)
            env = {k: v for k, v in found if k != "REGIMED_CONFIG"}
            if env:
                examples.append((f"{path.relative_to(REPO)}:{n}", env))
    return examples


def test_documented_environment_examples_are_valid():
    examples = documented_env_examples()
    documented = {k for _, env in examples for k in env}
    assert {"REGIMED_KAFKA__BOOTSTRAP_SERVERS", "REGIMED_WEIGHTS__REGIME__CRASH"} <= documented
    assert len(examples) >= 6
    for where, env in examples:
        try:
            config = parse("", **env)
        except ConfigError as exc:
            pytest.fail(f"{where}: {' '.join(f'{k}={v}' for k, v in env.items())}: {exc}")
        assert config != Config(), where


def test_changed_only_renders_what_differs_from_the_defaults():
    assert Config().to_toml(changed_only=True) == ""
    c = parse(
        '[metrics]\nport = 9300\n[weights.regime]\ncrash = 2.5\n[store]\npath = "regimed.db"\n',
        REGIMED_KAFKA__SASL_PLAIN_PASSWORD="hunter2",
    )
    text = c.to_toml(changed_only=True)
    assert tomllib.loads(text) == {
        "metrics": {"port": 9300},
        "weights": {"regime": {"crash": 2.5}},
        "kafka": {"sasl_plain_password": "********"},
    }
    assert "hunter2" not in text


def test_environment_booleans_and_empty_lists():
    c = parse("", REGIMED_ALERTS__WEBHOOKS="")
    assert c.alerts.webhooks == ()


def test_secrets_are_masked_everywhere_they_could_leak():
    c = parse(
        '[alerts]\nwebhooks = ["https://hooks.example/T0KEN"]\n',
        REGIMED_KAFKA__SASL_PLAIN_PASSWORD="hunter2",
    )
    rendered = c.to_toml() + repr(c) + str(c)
    assert "hunter2" not in rendered
    assert "T0KEN" not in rendered
    assert 'sasl_plain_password = "********"' in c.to_toml()
    assert c.alerts.webhooks[0].get_secret_value() == "https://hooks.example/T0KEN"


def test_effective_config_renders_as_toml_that_loads_back():
    c = parse("[regime]\nvix_crash = 40\n[sampling.target_mix]\ncrash = 0.2\nnormal = 0.3\n")
    again = parse(c.to_toml())
    assert again == c
    assert tomllib.loads(c.to_toml())["sampling"]["target_mix"]["crash"] == 0.2


def test_file_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(env={})[1] is None  # nothing anywhere: built-in defaults
    (tmp_path / "config.toml").write_text("[metrics]\nport = 9200\n")
    config, source = load_config(env={})
    assert (config.metrics.port, source) == (9200, Path("config.toml"))
    other = tmp_path / "other.toml"
    other.write_text("[metrics]\nport = 9300\n")
    assert load_config(env={"REGIMED_CONFIG": str(other)})[0].metrics.port == 9300
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[metrics]\nport = 9400\n")
    assert load_config(explicit, env={"REGIMED_CONFIG": str(other)})[0].metrics.port == 9400


def test_missing_files_and_bad_files_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"--config .*nope\.toml: no such file"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match=r"REGIMED_CONFIG=.*gone\.toml: no such file"):
        load_config(env={"REGIMED_CONFIG": str(tmp_path / "gone.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text('[regime]\nvix_crash = "high"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: regime.vix_crash = \"high\""):
        load_config(bad, env={})


def test_secret_equality_and_truthiness():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert not Secret("")
    assert str(Secret("x")) == "********"


def test_regime_shares_keyed_in_regime_order():
    assert list(RegimeShares().as_dict()) == [
        "low_volatility",
        "normal",
        "high_volatility",
        "crash",
        "recovery",
    ]


toml_scalars = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.booleans(),
    st.lists(st.text(max_size=8), max_size=3),
)
section_names = st.sampled_from(
    [
        "kafka",
        "store",
        "metrics",
        "schedule",
        "alerts",
        "regime",
        "label",
        "sampling",
        "weights",
        "archive",
    ]
)


@st.composite
def hostile_tables(draw):
    data = {}
    for section in draw(st.lists(section_names, max_size=4, unique=True)):
        keys = st.one_of(
            st.sampled_from(
                [
                    "vix_crash",
                    "port",
                    "topic",
                    "bootstrap_servers",
                    "hour",
                    "webhooks",
                    "horizon_bars",
                    "seed",
                    "path",
                    "timezone",
                    "budget",
                    "symbols",
                    "events",
                ]
            ),
            st.text(min_size=1, max_size=10),
        )
        data[section] = draw(st.dictionaries(keys, toml_scalars, max_size=4))
    return data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_tables())
def test_hostile_config_values_give_config_or_a_named_config_error(data):
    from daemon.config.settings import build

    try:
        config = build(Config, data, {})
    except ConfigError as exc:
        text = str(exc)
        assert text
        # The message starts with the key path it is about.
        first = text.split(" ", 1)[0].split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]
        assert first in data
    else:
        assert isinstance(config, Config)


@settings(max_examples=200)
@given(
    st.text(max_size=30),
    st.sampled_from(
        [
            "REGIME__VIX_CRASH",
            "KAFKA__MAX_POLL_RECORDS",
            "KAFKA__BOOTSTRAP_SERVERS",
            "SCHEDULE__TIMEZONE",
            "ALERTS__WEBHOOKS",
            "KAFKA__SECURITY_PROTOCOL",
        ]
    ),
)
def test_hostile_environment_values_never_escape_as_other_errors(value, key):
    try:
        parse("", **{f"REGIMED_{key}": value})
    except RegimedError as exc:
        assert f"REGIMED_{key}" in str(exc)


# -- [archive]: an array of tables ------------------------------------------------------------

EVENT = '{ name = "A", start = 2008-09-01, end = 2008-09-30, label = "crash", share = %s }'


def archive_events(*rows: str) -> str:
    return "[archive]\nevents = [\n" + "".join(f"  {r},\n" for r in rows) + "]\n"


def test_archive_defaults_are_the_design_events():
    from daemon.config import ArchiveConfig

    a = Config().archive
    assert a == ArchiveConfig()
    assert (a.budget, a.seed, a.symbols) == (2000, 42, ("^GSPC", "^IXIC"))
    assert [(e.name, str(e.start), str(e.end), e.label, e.share) for e in a.events] == [
        ("2008 Financial Crisis", "2008-09-01", "2009-03-31", "crash", 0.20),
        ("2011 Debt Ceiling", "2011-07-01", "2011-08-31", "high_volatility", 0.15),
        ("2015 China Devaluation", "2015-08-01", "2015-09-30", "high_volatility", 0.15),
        ("2018 Volmageddon", "2018-02-01", "2018-02-28", "crash", 0.20),
        ("2020 COVID Crash", "2020-02-20", "2020-03-23", "crash", 0.10),
        ("2020 COVID Recovery", "2020-03-24", "2020-06-30", "recovery", 0.10),
        ("2022 Inflation Bear", "2022-01-01", "2022-12-31", "high_volatility", 0.05),
        ("2023 Banking Crisis", "2023-03-01", "2023-04-30", "high_volatility", 0.05),
    ]


def test_regime_name_literal_lists_the_regimes():
    import typing

    from daemon.domain import REGIMES, RegimeName

    assert typing.get_args(RegimeName) == REGIMES


def test_archive_events_as_array_of_tables_inline_tables_or_date_strings():
    import datetime as dt

    tables = parse(
        "[archive]\nbudget = 0\n"
        '[[archive.events]]\nname = "Crash"\nstart = 2008-09-01\nend = 2008-12-31\n'
        'label = "crash"\nshare = 0.75\n'
        '[[archive.events]]\nname = "Rebound"\nstart = "2009-03-10"\nend = "2009-06-30"\n'
        'label = "recovery"\nshare = 0.25\n'
    )
    inline = parse(
        archive_events(
            '{ name = "Crash", start = 2008-09-01, end = 2008-12-31, label = "crash", '
            "share = 0.75 }",
            '{ name = "Rebound", start = 2009-03-10, end = 2009-06-30, label = "recovery", '
            "share = 0.25 }",
        ),
        REGIMED_ARCHIVE__BUDGET="0",
    )
    assert tables == inline
    events = tables.archive.events
    assert [e.name for e in events] == ["Crash", "Rebound"]
    assert events[1].start == dt.date(2009, 3, 10)
    assert tables.archive.budget == 0
    # The effective configuration renders the events as [[archive.events]] and loads back.
    rendered = tables.to_toml()
    assert '[[archive.events]]\nname = "Crash"\nstart = 2008-09-01\n' in rendered
    assert parse(rendered) == tables


def test_archive_scalar_keys_come_from_the_environment_but_events_cannot():
    c = parse("", REGIMED_ARCHIVE__SYMBOLS="SPY, QQQ", REGIMED_ARCHIVE__SEED="7")
    assert (c.archive.symbols, c.archive.seed) == (("SPY", "QQQ"), 7)
    assert error_of("", REGIMED_ARCHIVE__EVENTS="x") == (
        "archive.events (from REGIMED_ARCHIVE__EVENTS): a list of tables cannot come from the "
        "environment; set [[archive.events]] in the configuration file"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[archive]\nbudget = -1\n", "archive.budget = -1: expected a number >= 0"),
        ("[archive]\nseed = -1\n", "archive.seed = -1: expected a number >= 0"),
        ("[archive]\nsymbols = []\n", "archive.symbols = []: expected at least one symbol"),
        ('[archive]\nsymbols = ["A", "A"]\n', 'archive.symbols[1] = "A": listed twice'),
        ('[archive]\nsymbols = [""]\n', 'archive.symbols[0] = "": expected a symbol'),
        ("[archive]\nevents = []\n", "archive.events = []: expected at least one event"),
        ('[archive]\nevents = "2008"\n', 'archive.events = "2008": expected a list of tables'),
        ("[archive]\nevents = [3]\n", "archive.events[0] = 3: expected a table"),
        (archive_events(EVENT % 0), "archive.events[0].share = 0: expected a number > 0"),
        (archive_events(EVENT % 1.5), "archive.events[0].share = 1.5: expected a number > 0 and"),
        (
            archive_events('{ name = "A", start = 2008-09-01, end = 2008-09-30, label = "crash" }'),
            "archive.events[0].share: missing key (each entry here needs name, start, end, "
            "label, share)",
        ),
        (
            archive_events(EVENT.replace("crash", "panic") % 1),
            'archive.events[0].label = "panic": expected one of "low_volatility", "normal", '
            '"high_volatility", "crash", "recovery"',
        ),
        (
            archive_events(EVENT.replace("2008-09-01", '"2008-02-30"') % 1),
            'archive.events[0].start = "2008-02-30": expected a date as YYYY-MM-DD',
        ),
        (
            archive_events(EVENT.replace("2008-09-01", '"20080901"') % 1),
            'archive.events[0].start = "20080901": expected a date as YYYY-MM-DD',
        ),
        (
            archive_events(EVENT.replace("2008-09-01", "2008-09-01T00:00:00") % 1),
            "archive.events[0].start = 2008-09-01T00:00:00: expected a date as YYYY-MM-DD",
        ),
        (
            archive_events(EVENT.replace("2008-09-01", "2008-10-01") % 1),
            "archive.events[0].start = 2008-10-01: expected a day on or before "
            "archive.events[0].end (2008-09-30)",
        ),
        (
            archive_events(EVENT.replace("share", "colour = 1, share") % 1),
            "archive.events[0].colour: unknown key",
        ),
        (
            archive_events(EVENT % 0.5, EVENT % 0.5),
            'archive.events[1].name = "A": also the name of archive.events[0]',
        ),
        (
            archive_events(EVENT % 0.5, EVENT.replace('"A"', '"B"').replace("-01", "-30") % 0.5),
            "archive.events[1].start = 2008-09-30: overlaps archive.events[0] (A, "
            "2008-09-01..2008-09-30); expected disjoint event windows",
        ),
        (
            archive_events(
                EVENT % 0.5,
                '{ name = "B", start = 2009-01-01, end = 2009-01-31, '
                'label = "recovery", share = 0.4 }',
            ),
            "archive.events: the shares sum to 0.9 (A 0.5, B 0.4); expected 1",
        ),
    ],
)
def test_bad_archive_values_name_the_key(text, message):
    assert message in error_of(text)


def test_changing_one_shipped_archive_share_breaks_the_sum():
    assert "archive.events: the shares sum to" in error_of(
        (REPO / "config.toml").read_text().replace("share = 0.05 },\n]", "share = 0.5 },\n]")
    )
