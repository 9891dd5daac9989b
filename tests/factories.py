"""The helpers several test modules share (a test module imports none from another, see
tests/test_layout.py): a daemon configuration on a test broker, numbered bars and what the store
holds of them, the child processes of a process (read from /proc), slices of the bundled history
with their regimes, base models small enough to fit in a test and registered model versions, a
bounded wait, the service on a thread with its /metrics, a webhook receiver, a hand-moved
clock and stored live predictions with their labels."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from consumers.events import BarEvent, DecodedBatch
from consumers.replay import bundled_events
from daemon.config import Config, KafkaConfig, MetricsConfig, RegimeConfig, StoreConfig
from daemon.config.training import (
    ExtraTreesConfig,
    GradientBoostingConfig,
    LightGBMConfig,
    MLPConfig,
    ModelsConfig,
    RandomForestConfig,
    SVMConfig,
    XGBoostConfig,
)
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.domain import Bar, LabelUpdate, PredictionRow
from daemon.errors import StoreError
from daemon.pipeline.engine import Output, history_rows
from daemon.pipeline.features import FEATURE_NAMES
from daemon.pipeline.regime import label_history
from daemon.store.sqlite import Store
from daemon.store.targets import set_target

if TYPE_CHECKING:
    from daemon.runtime.service import Service

#: The eight base models with few trees, iterations and kernel components: every fit on a
#: few thousand rows takes well under a second.
SMALL_MODELS = ModelsConfig(
    random_forest=RandomForestConfig(n_estimators=10, max_depth=5),
    xgboost=XGBoostConfig(n_estimators=20),
    lightgbm=LightGBMConfig(n_estimators=20),
    extra_trees=ExtraTreesConfig(n_estimators=10, max_depth=5),
    gradient_boosting=GradientBoostingConfig(max_iter=20),
    mlp=MLPConfig(hidden_layer_sizes=(16,), max_iter=20),
    svm=SVMConfig(n_components=50),
)


def broker_config(bootstrap: str, topic: str, group: str, member: str, state: Path) -> Config:
    """A daemon configuration for a test broker: the test timeouts of kafka-python 3, a store
    in `state` and metrics on a free port."""
    kafka = KafkaConfig(
        bootstrap_servers=(bootstrap,),
        topic=topic,
        group_id=group,
        group_instance_id=member,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=500,
    )
    return Config(
        kafka=kafka,
        store=StoreConfig(path=str(state / "regimed.db")),
        metrics=MetricsConfig(port=0),
    )


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a daemon's writer and helper processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def bundled_slice(name: str, start: str, end: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bundled daily bars of `name` (sp500, nasdaq) from `start` to `end` (ISO days,
    included) and their regime labels (columns vix, vix_source, regime) under the default
    rules with the bundled VIX, labelled over the whole history so the slice's first bars carry
    the regimes a live stream would give them."""
    bars = read_bars_csv(bundled_path(name))
    labels = label_history(RegimeConfig(), bars["close"], read_vix_csv(bundled_path("vix")))
    keep = (bars.index >= pd.Timestamp(start)) & (bars.index <= pd.Timestamp(end))
    return bars[keep], labels[keep]


def assert_same_rows(
    got: pd.DataFrame, expected: pd.DataFrame, what: str, tol: float = 1e-9
) -> None:
    """Feature rows `got` are `expected`'s: the feature columns, the same days, every value
    within `tol` (relative and absolute); a failure names the first feature and day that
    differ and both values."""
    assert list(got.columns) == list(FEATURE_NAMES)
    assert list(got.index) == list(expected.index), f"{what}: rows on other days"
    g, e = got.to_numpy(), expected.to_numpy()
    bad = ~np.isclose(g, e, rtol=tol, atol=tol)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        pytest.fail(
            f"{what}: {FEATURE_NAMES[col]} at {got.index[row]}: {g[row, col]!r}, "
            f"expected {e[row, col]!r}"
        )


# --- bars, events and what the store holds of them -------------------------------------------


def numbered(n: int, symbols: int = 5) -> list[BarEvent]:
    """n valid bars: symbol k gets consecutive business days, prices encode the number."""
    events = []
    day0 = dt.date(2001, 1, 1)
    for i in range(n):
        symbol = f"N{i % symbols}"
        day = day0 + dt.timedelta(days=i // symbols)
        price = 100.0 + (i % 97)
        events.append(BarEvent(symbol, day, price, price * 1.01, price * 0.99, price, float(i)))
    return events


def chunk(first: str, last: str) -> list[Any]:
    """Bundled ^GSPC, ^IXIC and ^VIX bars from `first` to `last` (ISO days), in time order."""
    return [e for e in bundled_events() if first <= str(e.ts) <= last]


def stored_numbers(store: Store) -> list[int]:
    bars = store.bars()
    return sorted(int(v) for v in bars["volume"])


def events_stored(config: Config) -> int:
    """The store's events_stored counter, 0 while the daemon has not created or migrated it."""
    if not Path(config.store.path).exists():
        return 0
    try:
        with Store.open(config.store, read_only=True) as store:
            return store.counter("events_stored")
    except StoreError:
        return 0


def bars_stored(config: Config) -> int:
    with Store.open(config.store, read_only=True) as store:
        return store.bar_count()


def write_config(config: Config, path: Path) -> Path:
    path.write_text(config.to_toml())
    return path


def read_topic(bootstrap: str, topic: str, at_least: int, timeout_s: float = 30) -> list:
    """The records of a topic, from the start (at least `at_least` of them, bounded)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < at_least and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


# --- models in the registry --------------------------------------------------------------------

#: When `register` says a model was trained, unless told otherwise.
T0 = dt.datetime(2024, 1, 6, 21, tzinfo=dt.UTC)


def make_data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(np.int8)
    return X, y


def register(registry, version, models, trained_at=T0, **kwargs):
    return registry.register(
        version,
        models,
        trained_at=trained_at,
        trigger=kwargs.pop("trigger", "schedule"),
        data_window=(dt.date(2020, 1, 2), "2023-12-29"),
        sample_counts={"live": {"crash": 3, "normal": 40}, "archive": {"crash": 9}},
        report={"validation": {"overall": {"n": 50, "accuracy": 0.6, "balanced_accuracy": 0.55}}},
        meta={"feature_version": 1},
        **kwargs,
    )


def tamper(record, name="logistic_regression.skops"):
    target = Path(record.path) / name
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


# --- waiting, processes, tools and the running service ----------------------------------------


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """The first true value of `condition()`, asked every 0.1 s; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: install the Debian package `{package}` "
            f"(apt-get install -y {package}); .ci/run does this in CI"
        )
    return path


class Running:
    """A Service on a thread, stopped and joined on exit."""

    def __init__(self, config: Config) -> None:
        from daemon.runtime.service import Service  # river and the models load only when used

        self.service = Service(config)
        self.thread = threading.Thread(target=self.service.run, kwargs={"timeout_s": 600})

    def __enter__(self) -> Service:
        self.thread.start()
        wait_for(lambda: self.service.metrics_port, 60, "the metrics endpoint")
        return self.service

    def __exit__(self, *exc: object) -> None:
        self.service.request_stop()
        self.thread.join(timeout=40)
        assert not self.thread.is_alive(), "the service did not stop within 40 s"


def scrape(service: Service, path: str = "/metrics") -> tuple[int, str]:
    url = f"http://127.0.0.1:{service.metrics_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- webhooks and clocks -------------------------------------------------------------------------


@dataclass
class WebhookServer:
    """A webhook receiver on 127.0.0.1: POSTs to /ok answer 204, to /fail 500, to /slow after
    `slow_seconds`. `received` holds (path, headers, JSON body) of every request."""

    base: str = ""
    received: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    slow_seconds: float = 0.5

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def events(self) -> list[str]:
        return [body["event"] for _, _, body in self.received]


@contextmanager
def serve_webhooks() -> Iterator[WebhookServer]:
    """Run a `WebhookServer` in a thread; shut down and joined (bounded) on exit."""
    state = WebhookServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((self.path, dict(self.headers), json.loads(body)))
            if self.path.startswith("/slow"):
                time.sleep(state.slow_seconds)
            self.send_response(500 if self.path.startswith("/fail") else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() joins the handler threads
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_history(config: Config, histories: Mapping[str, pd.DataFrame], vix: pd.DataFrame) -> None:
    """Store each symbol's bars and their labelled feature rows as live samples, through the
    batch path, in the store of `config`."""
    with Store.open(config.store) as store:
        set_target(store, "live", config.label)  # the samples record the target they are for
        for symbol, bars in histories.items():
            bar_rows, samples = history_rows(config, symbol, bars, vix)
            store.write_batch(bars=bar_rows, samples=samples)


def learnable_store(path: Path, sp500: pd.DataFrame, vix: pd.DataFrame) -> Path:
    """A store at `path` holding the bundled S&P 500 from 2008 (about 2,700 labelled rows, no
    archive), labelled by the sign of a feature so that a candidate shows skill."""
    config = Config().replace(store=StoreConfig(path=str(path)))
    store_history(config, {"^GSPC": sp500[sp500.index >= "2008-01-01"]}, vix)
    label_by_feature(config, "macd_hist")
    return path


def copy_store(source: Path, directory: Path) -> Path:
    """A private copy of the store file `source` in `directory` (for a test that writes to a
    store a session fixture built once)."""
    path = directory / "regimed.db"
    shutil.copy(source, path)
    return path


def columns(bars: Sequence[Bar]) -> DecodedBatch:
    """Bars as the consumer hands them to the pipeline."""
    return DecodedBatch(
        symbols=[b.symbol for b in bars],
        ts=[b.ts for b in bars],
        days=[b.day for b in bars],
        open=[b.open for b in bars],
        high=[b.high for b in bars],
        low=[b.low for b in bars],
        close=[b.close for b in bars],
        volume=[b.volume for b in bars],
    )


def final(outs: Sequence[Output]) -> tuple[dict[Any, list[Any]], dict[Any, Any], dict[Any, int]]:
    """Bars per key in the order written, samples by key, and every matured label."""
    bars: dict[Any, list[Any]] = {}
    samples: dict[Any, Any] = {}
    labels: dict[Any, int] = {}
    for out in outs:
        for b in out.all_bars():
            bars.setdefault((b.symbol, b.ts), []).append(b)
        for s in out.all_samples():
            samples[(s.symbol, s.ts)] = (s.regime, s.features.tobytes(), s.weight)
        for u in out.all_labels():
            labels[(u.symbol, u.ts)] = u.label
        for symbol, ts, label in out.settled:
            labels[(symbol, ts)] = label
    return bars, samples, labels


def label_by_feature(config: Config, feature: str) -> None:
    """Set every sample's label to the sign of one of its own features (a learnable task: a
    candidate trained on it shows skill)."""
    from daemon.pipeline.features.defs import FEATURE_NAMES

    column = FEATURE_NAMES.index(feature)
    with Store.open(config.store) as store:
        meta, X = store.read_samples(source=None, labelled=True)
        labels = (X[:, column] > 0).astype(int)
        with store._conn:
            store._conn.executemany(
                "UPDATE samples SET label = ? WHERE source = ? AND symbol = ? AND ts = ?",
                [
                    (int(lab), str(src), str(sym), ts.strftime("%Y-%m-%d"))
                    for lab, src, sym, ts in zip(
                        labels, meta["source"], meta["symbol"], meta["ts"], strict=True
                    )
                ],
            )


#: The symbols of `live_history`.
LIVE_SYMBOLS = ("SPY", "QQQ")


def live_history(first: str, days: int, seed: int = 0) -> list[tuple[PredictionRow, int]]:
    """Two symbols' predictions on `days` trading days from `first`, with their labels.

    Normal days: the model is always right (balanced accuracy 1). Crash days: it always says
    up (balanced accuracy 0.5 whatever the labels). Other regimes: a coin (labels and
    predictions drawn independently).
    """
    rng = np.random.default_rng(seed)
    out = []
    regimes = ("normal", "crash", "low_volatility")
    for k, day in enumerate(pd.bdate_range(first, periods=days)):
        ts = day.strftime("%Y-%m-%d")
        regime = regimes[(k // 5) % len(regimes)]
        version = "v1" if k < days // 2 else "v2"
        for symbol in LIVE_SYMBOLS:
            label = int(rng.integers(0, 2))
            pred = {"normal": label, "crash": 1}.get(regime, int(rng.integers(0, 2)))
            proba = 0.6 if pred else 0.4
            out.append((PredictionRow(symbol, ts, version, proba, pred, regime), label))
    return out


def write_live_store(path: Path, rows: list[tuple[PredictionRow, int]], matured: int) -> None:
    """Store every prediction, and the labels of the first `matured` of them."""
    with Store(path) as store:
        store.write_batch(predictions=[p for p, _ in rows])
        store.write_batch(
            labels=[LabelUpdate(p.symbol, p.ts, "live", y) for p, y in rows[:matured]]
        )
