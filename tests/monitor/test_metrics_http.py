"""The metrics endpoint on its own: /metrics, /healthz, TLS and mutual TLS (real sockets)."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.config import MetricsConfig
from daemon.monitor.metrics import Metrics, serve


@pytest.fixture
def endpoint():
    started = []

    def start(config: MetricsConfig, health=None):
        metrics = Metrics.create()
        server, thread = serve(metrics, config, health)
        started.append((server, thread))
        return metrics, server.server_port

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_healthz(endpoint):
    state = {"ok": True}
    metrics, port = endpoint(
        MetricsConfig(port=0),
        lambda: (True, "ok: polling") if state["ok"] else (False, "consume loop stalled"),
    )
    metrics.drift_score.set(0.5)
    code, text = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200 and "regimed_drift_score 0.5" in text
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok: polling\n")
    state["ok"] = False
    assert get(f"http://127.0.0.1:{port}/healthz") == (503, "consume loop stalled\n")


def test_an_unknown_path_is_404_naming_the_paths_served_and_the_root_lists_them(endpoint):
    _, port = endpoint(MetricsConfig(port=0))
    code, text = get(f"http://127.0.0.1:{port}/metric")
    assert code == 404
    assert "not found: /metric" in text and "/metrics" in text and "/healthz" in text
    assert "regimed_" not in text
    code, text = get(f"http://127.0.0.1:{port}/")
    assert code == 200 and "/metrics" in text and "/healthz" in text
    code, text = get(f"http://127.0.0.1:{port}/metrics?name[]=regimed_drift_score")
    assert code == 200 and "regimed_drift_score" in text


def make_cert(directory: Path, name: str, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    if ca is None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return key, cert
    csr = directory / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
         "-CAcreateserial", "-days", "2", "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def test_tls_and_mutual_tls(endpoint, tmp_path):
    server_key, server_cert = make_cert(tmp_path, "server")
    ca_key, ca_cert = make_cert(tmp_path, "ca")
    client_key, client_cert = make_cert(tmp_path, "client", ca=(ca_key, ca_cert))

    _, port = endpoint(MetricsConfig(port=0, certfile=str(server_cert), keyfile=str(server_key)))
    trusting = ssl.create_default_context(cafile=str(server_cert))
    assert get(f"https://127.0.0.1:{port}/metrics", trusting)[0] == 200
    with pytest.raises(urllib.error.URLError):
        get(f"https://127.0.0.1:{port}/metrics")  # an unknown certificate is refused

    _, port = endpoint(
        MetricsConfig(
            port=0,
            certfile=str(server_cert),
            keyfile=str(server_key),
            client_cafile=str(ca_cert),
        )
    )
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        get(f"https://127.0.0.1:{port}/metrics", trusting)  # no client certificate
    trusting.load_cert_chain(str(client_cert), str(client_key))
    assert get(f"https://127.0.0.1:{port}/metrics", trusting)[0] == 200


def test_tls_settings_must_come_in_pairs():
    from daemon.errors import ConfigError

    with pytest.raises(ConfigError, match=r"metrics\.certfile and metrics\.keyfile"):
        MetricsConfig(certfile="/etc/regimed/cert.pem")
    with pytest.raises(ConfigError, match=r"metrics\.client_cafile"):
        MetricsConfig(client_cafile="/etc/regimed/ca.pem")
