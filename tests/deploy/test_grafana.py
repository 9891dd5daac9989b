"""The Grafana dashboard: its JSON model, its PromQL, and every panel answering from a real
Prometheus that scrapes a real daemon."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge

from consumers.replay import publish
from daemon.config import Config, RegimeConfig
from daemon.config.drift import DriftConfig
from daemon.domain import REGIMES
from daemon.monitor.metrics import MODEL_LABELS, RETRAIN_OUTCOMES, RETRAIN_TRIGGERS, Metrics
from tests.factories import Running, bars_stored, chunk, scrape, tool, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "regimed.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INSTANCE_MATCHER = 'instance="$instance"'
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
#: Label values the daemon can export, for the labels a panel selects on.
KNOWN_VALUES = {
    "regime": {*REGIMES, "overall"},
    "model": set(MODEL_LABELS),
    "source": {"live", "archive"},
    "trigger": set(RETRAIN_TRIGGERS),
    "outcome": set(RETRAIN_OUTCOMES),
}
SELECTOR = re.compile(r"\b((?:regimed|process)_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


# --- reading the dashboard ---------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that draws something (rows are only headings; a collapsed row holds its
    panels inside)."""
    found = []
    for panel in model["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """("panel title [refId]", expr) for every panel target."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in panels(model)
        for target in panel["targets"]
    ]


def annotation_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """("annotation name", expr) for every annotation on Prometheus."""
    return [
        (f"annotation {a['name']}", a["expr"])
        for a in model["annotations"]["list"]
        if a.get("datasource") == DATASOURCE
    ]


def queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    return panel_queries(model) + annotation_queries(model)


def substitute(expr: str, instance: str, interval: str = "30s", range_: str = "1h") -> str:
    """What Grafana sends for `expr`, with `$instance` set and the interval variables fixed."""
    for name, value in (
        ("instance", instance),
        ("__rate_interval", interval),
        ("__interval", interval),
        ("__range", range_),
    ):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"an unknown variable is left in {expr!r}"
    return expr


def exported() -> dict[str, set[str]]:
    """Metric name as scraped (counters with _total) -> its label names, from
    daemon/monitor/metrics.py."""
    metrics = Metrics.create()
    found = {}
    for field in dataclasses.fields(metrics):
        metric = getattr(metrics, field.name)
        if isinstance(metric, Counter):
            found[f"{metric._name}_total"] = set(metric._labelnames)
        elif isinstance(metric, Gauge):
            found[metric._name] = set(metric._labelnames)
    # The process collector on the same registry (CPU, memory, start time; no labels).
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.startswith("process_"):
                found[sample.name] = set()
    return found


# --- the JSON model ----------------------------------------------------------------------


def test_the_dashboard_is_an_importable_model_with_a_datasource_and_an_instance_variable():
    model = dashboard()
    assert model["id"] is None and model["uid"] == "regimed"
    assert 36 <= model["schemaVersion"] <= 41
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == DATASOURCE
    assert instance["definition"] == "label_values(regimed_events_consumed_total, instance)"
    assert "regimed_events_consumed_total" in exported()
    # No datasource is named anywhere: an import asks for nothing and works on any Grafana.
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {"${datasource}", "regimed", "-- Grafana --"}, set(uids)


def test_every_panel_has_a_title_a_description_and_queries_on_the_datasource_variable():
    drawn = panels(dashboard())
    assert len(drawn) >= 20
    for panel in drawn:
        title = panel.get("title", "")
        assert title, panel
        assert panel.get("description"), title
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title
    titles = [p["title"] for p in drawn]
    assert len(titles) == len(set(titles)), "two panels share a title"


def test_panels_sit_on_the_grid_without_overlapping():
    model = dashboard()
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_operations_issue_gets_its_panels():
    """Each item the operations issue asks for, as the metric that must carry it."""
    used = " ".join(expr for _, expr in queries(dashboard()))
    for metric in (
        "regimed_live_balanced_accuracy",  # per-regime live accuracy, balanced first
        "regimed_live_accuracy",
        "regimed_validation_balanced_accuracy",  # per-regime validation, by model
        "regimed_validation_accuracy",
        "regimed_drift_score",
        "regimed_feature_drift_psi",  # top drifting features
        "regimed_samples_stored",  # regime mix
        "regimed_bars_labeled_total",
        "regimed_market_regime",  # the market regime over time
        "regimed_events_consumed_total",  # ingest rate
        "regimed_consumer_lag_messages",
        "regimed_events_rejected_total",  # dead letters
        "regimed_retrain_runs_total",  # retrain history
        "regimed_retrain_duration_seconds",
        "regimed_next_retrain_timestamp_seconds",
        # freshness, prediction rate, champion present and the process
        "regimed_last_event_timestamp_seconds",
        "regimed_newest_bar_timestamp_seconds",
        "regimed_predictions_total",
        "regimed_champion_present",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ):
        assert metric in used, metric
    types = {p["type"] for p in panels(dashboard())}
    assert {"timeseries", "stat", "table", "state-timeline"} <= types


def test_the_live_panels_say_why_they_are_empty_before_a_champion_exists():
    """A panel that has no series until a champion scores rows shows why instead of "No
    data", and its description says so too."""
    live = [
        panel
        for panel in panels(dashboard())
        if any(
            name in target["expr"]
            for target in panel["targets"]
            for name in ("regimed_live_", "regimed_drift_score", "regimed_feature_drift_psi")
        )
    ]
    assert len(live) >= 8
    for panel in live:
        assert "champion" in panel["fieldConfig"]["defaults"].get("noValue", ""), panel["title"]
        assert "before the first promotion" in panel["description"], panel["title"]


def problems(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """What is wrong with `expr` for this dashboard: metrics the daemon does not export,
    selectors without the instance matcher, labels or label values the metric cannot have,
    groupings by labels none of its metrics has."""
    found = []
    selectors = SELECTOR.findall(expr)
    if not selectors:
        found.append("no regimed metric")
    labels: set[str] = set(TARGET_LABELS)
    for name, matchers in selectors:
        if name not in metrics:
            found.append(f"{name} is not exported by daemon/monitor/metrics.py")
            continue
        labels |= metrics[name]
        if INSTANCE_MATCHER not in matchers:
            found.append(f"{name} without {INSTANCE_MATCHER}")
        for matcher in filter(str.strip, matchers.split(",")):
            m = MATCHER.fullmatch(matcher)
            if m is None:
                found.append(f"{name}: cannot read the matcher {matcher!r}")
                continue
            key, op, value = m.groups()
            if key not in metrics[name] | TARGET_LABELS:
                found.append(f"{name} has no label {key}")
            elif key in KNOWN_VALUES and op in ("=", "!=") and value not in KNOWN_VALUES[key]:
                found.append(f"{name}: {key} is never {value!r}")
    for grouping in GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in grouping.split(","))):
            if label not in labels:
                found.append(f"groups by {label}, which none of its metrics has")
    return found


def test_every_query_selects_exported_metrics_and_labels_of_one_instance():
    metrics = exported()
    wrong = {
        where: found for where, expr in queries(dashboard()) if (found := problems(expr, metrics))
    }
    assert not wrong, wrong


def test_the_query_check_finds_what_would_leave_a_panel_empty():
    metrics = exported()
    i = INSTANCE_MATCHER
    assert problems(f"sum by (regime) (regimed_live_accuracy{{{i}}})", metrics) == []
    assert problems(f"rate(regimed_events_consumed{{{i}}}[5m])", metrics) == [
        "regimed_events_consumed is not exported by daemon/monitor/metrics.py"
    ]
    assert problems("regimed_drift_score", metrics) == [
        'regimed_drift_score without instance="$instance"'
    ]
    assert problems(f'regimed_live_accuracy{{{i}, model="ensemble"}}', metrics) == [
        "regimed_live_accuracy has no label model"
    ]
    assert problems(f'regimed_validation_accuracy{{{i}, regime="crashes"}}', metrics) == [
        "regimed_validation_accuracy: regime is never 'crashes'"
    ]
    assert problems(f"sum by (symbol) (regimed_market_regime{{{i}}})", metrics) == [
        "groups by symbol, which none of its metrics has"
    ]
    assert problems("time()", metrics) == ["no regimed metric"]
    assert problems(f"process_resident_memory_bytes{{{i}}}", metrics) == []
    assert problems(f"process_rss_bytes{{{i}}}", metrics) == [
        "process_rss_bytes is not exported by daemon/monitor/metrics.py"
    ]
    with pytest.raises(AssertionError, match="unknown variable"):
        substitute(f"rate(regimed_events_consumed_total{{{i}}}[$__step])", "127.0.0.1:9108")


@pytest.mark.integration
def test_every_query_is_valid_promql(tmp_path):
    """promtool checks the PromQL of recording rules: one rule per query."""
    rules = [
        {"record": f"dashboard:query_{i}:expr", "expr": substitute(expr, "127.0.0.1:9108")}
        for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [tool("promtool", "prometheus"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


# --- a real Prometheus scraping a real daemon --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_or_false(condition: Callable[[], bool], timeout_s: float) -> bool:
    """`condition` became true within `timeout_s` (checked once a second)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
    return True


class Prometheus:
    """/usr/bin/prometheus scraping one target every second, with its own storage."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "regimed",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.started = time.time()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus", "prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> Any:
        """The `data` of a successful API answer (the test fails on any other)."""
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body["status"] == "success", f"{params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            return bool(self.query('up{job="regimed"} == 1'))
        except (OSError, json.JSONDecodeError):
            return False  # not listening yet

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def start_prometheus(tmp_path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        started.append(Prometheus(workdir, target))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


@pytest.fixture
def config(kafka_config) -> Config:
    """The runtime tests' daemon (the bundled index as the market, a one-model retrain whose
    candidate the relaxed gate promotes), with drift measured early on few live rows but never
    starting a retrain of its own, so the scenario has exactly one retrain."""
    return kafka_config.replace(
        regime=RegimeConfig(market_symbol="^GSPC"),
        gate=dataclasses.replace(kafka_config.gate, min_edge=-1.0),
        training=dataclasses.replace(kafka_config.training, models=("logistic_regression",)),
        drift=DriftConfig(enabled=False, min_live_rows=20, live_window=100),
    )


def publish_dead_letters(config: Config, n: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=list(config.kafka.bootstrap_servers))
    for i in range(n):
        producer.send(config.kafka.topic, key=b"^GSPC", value=f"not json {i}".encode())
    producer.flush(timeout=30)
    producer.close(timeout=10)


@pytest.mark.integration
def test_every_panel_query_answers_from_prometheus_scraping_a_live_daemon(config, start_prometheus):
    first = chunk("2009-01-01", "2016-12-31")
    second = chunk("2017-01-01", "2018-12-31")
    publish(config.kafka, first, progress=False)
    with Running(config) as service:
        instance = f"127.0.0.1:{service.metrics_port}"
        prometheus = start_prometheus(instance)
        wait_for(prometheus.ready, 60, "prometheus to scrape the daemon")
        wait_for(lambda: bars_stored(config) == len(first), 120, "the first chunk")
        model = dashboard()
        queried = dict(panel_queries(model))
        # Before a champion: the champion panel says none, the prediction rate is a flat 0,
        # and the live panels have nothing to show (they say why: noValue).
        wait_for(
            lambda: prometheus.query(
                f'regimed_batches_committed_total{{instance="{instance}"}} > 0'
            ),
            30,
            "prometheus to scrape the stored chunk",
        )
        before = {
            where: prometheus.query(substitute(queried[where], instance))
            for where in ("Champion present [A]", "Predictions per minute [A]")
        }
        assert [float(s["value"][1]) for s in before["Champion present [A]"]] == [0.0]
        assert [float(s["value"][1]) for s in before["Predictions per minute [A]"]] == [0.0]
        live = substitute(queried["Live balanced accuracy by regime [A]"], instance)
        assert prometheus.query(live) == []
        assert service.retrains is not None and service.scorer is not None
        assert service.retrains.trigger("manual")
        result = wait_for(lambda: service.retrains.results, 180, "the retrain")[0]
        assert result.outcome == "promoted", result.reason
        wait_for(lambda: service.scorer.version == result.version, 30, "the hot swap")
        # Bars of the market symbol after the champion exists: scored rows and drift checks.
        publish(config.kafka, second, progress=False)
        publish_dead_letters(config, 3)
        wait_for(lambda: bars_stored(config) == len(first) + len(second), 120, "the bars")
        wait_for(
            lambda: all(
                f"{name}{{" in scrape(service)[1]
                for name in ("regimed_live_balanced_accuracy", "regimed_feature_drift_psi")
            ),
            60,
            "live accuracy and drift on /metrics",
        )
        wait_for(
            lambda: prometheus.query(
                f'regimed_feature_drift_psi{{instance="{instance}"}}'
                f' and on () regimed_events_rejected_total{{instance="{instance}",'
                f'reason="not_json"}} > 0'
            ),
            30,
            "prometheus to scrape them",
        )

        answers: dict[str, list[dict[str, Any]]] = {}

        def all_answer() -> bool:
            for where, expr in panel_queries(model):
                answers[where] = prometheus.query(substitute(expr, instance))
            return all(answers.values())

        if not wait_for_or_false(all_answer, 30):
            pytest.fail(
                "queries without a series:\n"
                + "\n".join(f"{w}: {e}" for w, e in panel_queries(model) if not answers[w])
            )
        # A few panels whose answer the scenario knows.
        assert [s["metric"]["version"] for s in answers["Champion model [A]"]] == [result.version]
        assert [
            (s["metric"]["trigger"], s["metric"]["outcome"])
            for s in answers["Retrains in the time range [A]"]
        ] == [("manual", "promoted")]
        assert len(answers["Market regime now [A]"]) == 1
        # Every reason is exported from start-up (at 0); only the malformed records count. Over
        # an hour, not the panel's 30 s: the waits above may outlast a 30 s window.
        dead_expr = dict(panel_queries(model))["Dead letters by reason [A]"]
        dead = prometheus.query(substitute(dead_expr, instance, interval="1h"))
        assert {s["metric"]["reason"] for s in dead if float(s["value"][1]) > 0} == {"not_json"}
        assert 0 < float(answers["Retrain duration [A]"][0]["value"][1]) < 180
        assert [float(s["value"][1]) for s in answers["Champion present [A]"]] == [1.0]
        assert [float(s["value"][1]) for s in answers["Restarts in the time range [A]"]] == [0.0]
        assert 0 <= float(answers["Feed age [A]"][0]["value"][1]) < 600
        newest = float(answers["Newest bar [A]"][0]["value"][1]) / 1000
        assert time.strftime("%Y-%m-%d", time.gmtime(newest)) == max(str(e.ts) for e in second)
        assert float(answers["Resident memory [A]"][0]["value"][1]) > 0

        annotations = annotation_queries(model)
        assert annotations
        for _, expr in annotations:
            data = prometheus.get(
                "/api/v1/query_range",
                query=substitute(expr, instance),
                start=str(prometheus.started),
                end=str(time.time()),
                step="1",
            )
            assert data["result"], f"annotation without an event: {expr}"
        options = prometheus.get(
            "/api/v1/label/instance/values", **{"match[]": "regimed_events_consumed_total"}
        )
        assert options == [instance]
