"""A real Prometheus and direct scraping, on the same traffic of two real inference servers, give the window
the same counters and every check the same verdict.

No Kubernetes: two servers on 127.0.0.1 stand for two pods (Prometheus scrapes them every second with the
labels namespace and pod, as kubernetes_sd_configs relabelling gives them), while this test scrapes them
itself every second as the operator does. The window starts after both sources have seen the counters
before it and ends after both have seen the last request, so the increases must be equal, not only close.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from kubeloop import analysis, stats
from kubeloop.controllers import metricsource
from kubeloop.runtime.serve.examples import build_model_dir, training_data
from support.prometheus import prometheus_bin_dir
from support.serve import Server

NAMESPACE = "team-a"
STARTED = "2026-01-01T00:00:00Z"  # both servers were serving before the window
SHIFTED = 4  # the feature the second half of the traffic shifts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    model = tmp_path_factory.mktemp("lr")
    build_model_dir(model, "logistic_regression", name="lr")
    started = {pod: Server("--model-dir", str(model)) for pod in ("lr-7d9-a", "lr-7d9-b")}
    try:
        for s in started.values():
            s.wait_for("ready")
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def prometheus(servers: dict[str, Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {
                "job_name": "kubeloop-inference",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{s.port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
                    for pod, s in servers.items()
                ],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(json.dumps(config))
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            str(prometheus_bin_dir() / "prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "log", "w"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://{address}"
    try:
        deadline = time.monotonic() + 60
        while not targets_up(url, len(servers)):
            assert proc.poll() is None, (directory / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not scrape both servers within 60 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def targets_up(url: str, count: int) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=2) as answer:
            targets = json.loads(answer.read())["data"]["activeTargets"]
    except (OSError, ValueError):
        return False
    return sum(t["health"] == "up" for t in targets) == count


class DirectScrapes:
    """The operator's direct path: every pod's /metrics each second, as rounds."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers
        self.rounds: list[metricsource.Scrape] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(1.0):
            now = datetime.datetime.now(datetime.UTC)
            pods = {
                f"uid-{pod}": (
                    analysis.parse_metrics(requests.get(f"{s.url}/metrics", timeout=5).text),
                    STARTED,
                )
                for pod, s in self.servers.items()
            }
            self.rounds.append(metricsource.Scrape(now, pods))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def send(server: Server, rows: np.ndarray[Any, Any], bad: int = 0) -> None:
    url = f"{server.url}/v2/models/lr/infer"
    with requests.Session() as session:
        for i in range(0, len(rows), 5):
            chunk = rows[i : i + 5]
            body = {
                "inputs": [
                    {
                        "name": "X",
                        "shape": list(chunk.shape),
                        "datatype": "FP32",
                        "data": chunk.ravel().tolist(),
                    }
                ]
            }
            assert session.post(url, json=body, timeout=10).status_code == 200
        for _ in range(bad):  # a wrong shape: a 4xx, counted but not an error of the model
            body = {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
            assert session.post(url, json=body, timeout=10).status_code == 400


def test_prometheus_and_direct_scraping_give_the_same_window_and_verdicts(
    servers: dict[str, Server], prometheus: str
) -> None:
    x, _ = training_data("logistic_regression")
    rng = np.random.default_rng(7)
    a, b = servers["lr-7d9-a"], servers["lr-7d9-b"]
    send(a, x[rng.choice(len(x), 200)])  # before the window
    direct = DirectScrapes(servers)
    try:
        time.sleep(3)  # both sources see the counters before the window
        since = datetime.datetime.now(datetime.UTC)
        time.sleep(2.5)  # a round of each source inside the window, before its traffic
        calm, shifted = x[rng.choice(len(x), 300)], x[rng.choice(len(x), 300)].copy()
        shifted[:, SHIFTED] += 2.0
        send(a, calm, bad=7)
        send(b, shifted)
        time.sleep(3.5)  # both sources see the last request
        until = datetime.datetime.now(datetime.UTC)
    finally:
        direct.stop()

    pods = [
        {"metadata": {"name": pod, "uid": f"uid-{pod}"}, "status": {"startTime": STARTED}} for pod in servers
    ]
    queried = metricsource.prometheus_scrapes(prometheus, NAMESPACE, pods, since, until, 1)
    assert queried and {uid for r in queried for uid in r.pods} == {"uid-lr-7d9-a", "uid-lr-7d9-b"}
    scraped = [r for r in direct.rounds if r.time <= until]
    one, two = (
        metricsource.window(scraped, since)[0].totals(),
        metricsource.window(queried, since)[0].totals(),
    )

    assert one.requests() == two.requests() == 120 + 7 and one.errors() == two.errors() == 0
    assert one.latency_buckets() == two.latency_buckets()
    assert one.class_counts() == two.class_counts() and sum(two.class_counts().values()) == 600
    baseline = json.loads(requests.get(f"{a.url}/kubeloop/v1/baseline", timeout=5).text)
    assert one.feature_counts(baseline) == two.feature_counts(baseline)

    verdicts = []
    for totals in (one, two):
        drift = stats.judge_drift(baseline, totals.feature_counts(baseline), method="psi", min_samples=100)
        slo = analysis.slo_error_check(totals, 0.01, 50)
        latency = analysis.latency_check(totals, 1000.0, 50, subject="")
        failed = [f.feature for f in drift.features if f.verdict == "fail"]
        verdicts.append((drift.verdict, failed, slo.verdict, latency.verdict, latency.value))
    assert verdicts[0] == verdicts[1], verdicts
    names = list(baseline["features"])
    assert verdicts[0][0] == "fail" and verdicts[0][1] == [names[SHIFTED]], verdicts[0]
    assert verdicts[0][2] == verdicts[0][3] == "pass"


def test_an_error_of_prometheus_is_a_source_error_with_its_status(prometheus: str) -> None:
    pods = [{"metadata": {"name": "p", "uid": "u"}, "status": {"startTime": STARTED}}]
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(metricsource.SourceError, match="answered 404"):
        metricsource.prometheus_scrapes(f"{prometheus}/not-here", NAMESPACE, pods, now, now, 1)


def test_prometheus_without_series_of_the_pods_gives_no_rounds(prometheus: str, tmp_path: Path) -> None:
    pods = [{"metadata": {"name": "not-scraped", "uid": "u"}, "status": {"startTime": STARTED}}]
    now = datetime.datetime.now(datetime.UTC)
    assert (
        metricsource.prometheus_scrapes(
            prometheus, NAMESPACE, pods, now - datetime.timedelta(minutes=1), now, 1
        )
        == []
    )


def test_a_canary_window_waits_for_the_pods_prometheus_has_not_scraped(
    prometheus: str, servers: dict[str, Server]
) -> None:
    """The canary's window starts only once Prometheus holds a sample of every pod: requests a new pod
    answered before its first scrape would otherwise be lost to the window (the fixture waits until
    Prometheus scrapes both servers)."""
    scraped = [{"metadata": {"name": pod, "uid": f"uid-{pod}"}} for pod in servers]
    new = {"metadata": {"name": "lr-7d9-new", "uid": "uid-new"}}
    now = datetime.datetime.now(datetime.UTC)
    assert metricsource.unscraped(prometheus, NAMESPACE, [*scraped, new], now) == ["lr-7d9-new"]
    assert metricsource.unscraped(prometheus, NAMESPACE, scraped, now) == []
    with pytest.raises(metricsource.SourceError, match="cannot be reached"):
        metricsource.unscraped("http://127.0.0.1:1", NAMESPACE, scraped, now)
