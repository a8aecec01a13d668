"""Prometheus and direct scraping give the Window the same rounds: the same counters, the same verdicts.

The servers' real exposition (kubeloop.runtime.serve.metrics) is written into the JSON a Prometheus range
query answers, with what Prometheus adds (target labels, le normalised as Prometheus 3 writes it, string
values), and read back through ``analysis.samples_from_prometheus``. A real Prometheus does the same in
tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest

from kubeloop import analysis, stats
from kubeloop.controllers import metricsource
from kubeloop.controllers.metricsource import Scrape
from kubeloop.runtime.serve.examples import training_data
from kubeloop.runtime.serve.metrics import Metrics
from kubeloop.runtime.serve.model import Model

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
STARTED = {"uid-a": "2026-12-01T11:00:00Z", "uid-b": "2026-12-01T12:00:15Z"}  # b starts inside the window


def traffic(
    model: Model, metrics: Metrics, rows: int, seed: int, errors: int = 0, shift: float = 0.0
) -> None:
    x, _ = training_data("logistic_regression")
    x = x[np.random.default_rng(seed).choice(len(x), rows, replace=False)].copy()
    x[:, 2] += shift
    for i in range(rows):
        metrics.request("v2", 500 if i < errors else 200, 0.001 * (1 + i % 7))
    metrics.batch(x, model.predict(x))


def as_prometheus(rounds: list[tuple[float, dict[str, analysis.Sample]]], pod_of: dict[str, str]) -> Any:
    """The answer of ``/api/v1/query`` for ``selector[range:step]`` over these rounds."""
    series: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for at, pods in rounds:
        for uid, sample in pods.items():
            for (name, labels), value in sample.series.items():
                if name not in analysis.COUNTERS:
                    continue
                metric = dict(labels)
                if "le" in metric and metric["le"] != "+Inf":
                    metric["le"] = repr(float(metric["le"]))  # Prometheus 3 writes le="1" as "1.0"
                metric.update(
                    __name__=name,
                    namespace="team-a",
                    pod=pod_of[uid],
                    job="kubeloop-inference",
                    instance=f"10.244.0.{len(pod_of[uid])}:8080",
                )
                key = tuple(sorted(metric.items()))
                series.setdefault(key, []).append([at, repr(value) if value % 1 else str(int(value))])
    result = [{"metric": dict(k), "values": v} for k, v in series.items()]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def test_the_same_traffic_gives_the_same_window_from_both_sources(model: Model) -> None:
    a, b = Metrics(model), Metrics(model)
    traffic(model, a, 400, seed=1)  # before the window
    rounds: list[tuple[float, dict[str, analysis.Sample]]] = []
    for step in range(4):
        traffic(model, a, 60, seed=10 + step, errors=step)
        pods = {"uid-a": analysis.parse_metrics(a.render().decode())}
        if step >= 2:  # b started at 15 s; its first round is at 20 s
            traffic(model, b, 40, seed=20 + step, errors=3, shift=1.5)
            pods["uid-b"] = analysis.parse_metrics(b.render().decode())
        rounds.append((T0.timestamp() + 10 * step, pods))

    direct = [
        Scrape(
            datetime.datetime.fromtimestamp(at, datetime.UTC), {u: (s, STARTED[u]) for u, s in pods.items()}
        )
        for at, pods in rounds
    ]
    read = analysis.samples_from_prometheus(
        as_prometheus(rounds, {"uid-a": "iris-7d9-x", "uid-b": "iris-7d9-y"})
    )
    assert sorted(read) == ["iris-7d9-x", "iris-7d9-y"] and len(read["iris-7d9-x"]) == 4
    uid = {"iris-7d9-x": "uid-a", "iris-7d9-y": "uid-b"}
    by_time: dict[float, dict[str, tuple[analysis.Sample, str]]] = {}
    for pod, samples in read.items():
        for at, sample in samples:
            by_time.setdefault(at, {})[uid[pod]] = (sample, STARTED[uid[pod]])
    queried = [Scrape(datetime.datetime.fromtimestamp(t, datetime.UTC), by_time[t]) for t in sorted(by_time)]

    (w1, span1), (w2, span2) = metricsource.window(direct, T0), metricsource.window(queried, T0)
    one, two = w1.totals(), w2.totals()
    # a: 3 rounds of increase after its first (60 each, 1+2+3 errors); b: all of its 2 rounds (fresh).
    assert span1 == span2 == 30.0
    assert one.requests() == two.requests() == 3 * 60 + 2 * 40
    assert one.errors() == two.errors() == 6 + 6
    assert one.latency_buckets() == two.latency_buckets()
    assert one.class_counts() == two.class_counts() and sum(one.class_counts().values()) == 260
    assert one.feature_counts(model.baseline) == two.feature_counts(model.baseline)
    for check in (
        analysis.slo_error_check(one, 0.01, 100),
        analysis.latency_check(one, 5.0, 100, subject=""),
        analysis.input_drift_check(one, model.baseline, 0.2, None),
    ):
        again = {
            "errorRate": lambda: analysis.slo_error_check(two, 0.01, 100),
            "latencyP99": lambda: analysis.latency_check(two, 5.0, 100, subject=""),
            "inputDrift": lambda: analysis.input_drift_check(two, model.baseline, 0.2, None),
        }[check.name]()
        assert (check.verdict, check.value, check.samples) == (again.verdict, again.value, again.samples)
    verdict = stats.judge_drift(model.baseline, two.feature_counts(model.baseline), method="psi")
    assert verdict.scores  # the queried window holds every feature's bins


def test_only_the_servers_labels_are_kept(model: Model) -> None:
    """Every label the servers put on a counter is known, so no series is merged with another."""
    m = Metrics(model)
    traffic(model, m, 50, seed=3, errors=2)
    sample = analysis.parse_metrics(m.render().decode())
    used = {k for (name, labels) in sample.series if name in analysis.COUNTERS for k, _ in labels}
    assert used and used <= analysis.SERVER_LABELS


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}, "parse error"),
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, "not a matrix"),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": []}]}},
            "pod",
        ),
        (
            {
                "status": "success",
                "data": {
                    "resultType": "matrix",
                    "result": [{"metric": {"__name__": "x", "pod": "p"}, "values": [[1.0, "1e"]]}],
                },
            },
            "malformed value",
        ),
        ("<html>proxy error</html>", "not a Prometheus answer"),
    ],
)
def test_an_answer_that_is_not_a_matrix_is_refused_with_what_is_wrong(answer: Any, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        analysis.samples_from_prometheus(answer)


def test_the_selector_names_the_counters_and_escapes_pod_names() -> None:
    text = metricsource.selector("team-a", ["iris-canary-5f.x", "iris-7d9"])
    assert 'namespace="team-a"' in text and r'pod=~"iris-7d9|iris-canary-5f\\.x"' in text
    assert all(name in text for name in analysis.COUNTERS)


def test_prometheus_that_cannot_be_reached_is_a_source_error() -> None:
    pod = {"metadata": {"name": "p", "uid": "u"}, "status": {"startTime": "2026-12-01T11:00:00Z"}}
    with pytest.raises(metricsource.SourceError, match="cannot be reached"):
        metricsource.prometheus_scrapes("http://127.0.0.1:1", "ns", [pod], T0, T0, 10)
