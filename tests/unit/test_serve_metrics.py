"""Metrics: per-feature histograms on exactly the baseline's bins, predictions by class, rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kubeloop.analysis import parse_metrics
from kubeloop.runtime.serve.examples import build_model_dir
from kubeloop.runtime.serve.metrics import ConnectionCounts, Metrics
from kubeloop.runtime.serve.model import Model


def series(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in Prometheus text format."""
    return {m[1]: float(m[2]) for m in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M)}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    d = tmp_path_factory.mktemp("lr")
    build_model_dir(d, "logistic_regression")
    baseline = json.loads((d / "baseline.json").read_text())
    baseline["features"]["f1"] = {
        "kind": "categorical",
        "categories": ["0", "1"],
        "counts": [5, 5],
        "nulls": 0,
    }
    (d / "baseline.json").write_text(json.dumps(baseline))
    return Model(d)


def test_feature_histograms_use_the_baseline_edges(model: Model) -> None:
    metrics = Metrics(model)
    edges = model.baseline["features"]["f0"]["edges"]
    x = np.zeros((4, 20), np.float32)
    below, second = edges[0] - 1, (edges[0] + edges[1]) / 2
    x[:, 0] = [below, below, edges[-1] + 1, second]
    x[:, 1] = [0, 1, 1, 7]
    metrics.batch(x, model.predict(x))
    text = metrics.render().decode()
    buckets = series(text, "kubeloop_feature_value_bucket")
    f0 = {k: v for k, v in buckets.items() if 'feature="f0"' in k}
    assert [k.rsplit('le="', 1)[1].rstrip('"') for k in f0] == [repr(float(e)) for e in edges] + ["+Inf"]
    assert f0[f'model="logistic-regression",feature="f0",le="{edges[0]!r}"'] == 2
    assert f0[f'model="logistic-regression",feature="f0",le="{edges[1]!r}"'] == 3
    assert f0['model="logistic-regression",feature="f0",le="+Inf"'] == 4
    cats = series(text, "kubeloop_feature_category_total")
    assert cats == {
        'model="logistic-regression",feature="f1",category="0"': 1,
        'model="logistic-regression",feature="f1",category="1"': 2,
        'model="logistic-regression",feature="f1",category="__other__"': 1,
    }
    assert not any('feature="f1"' in k for k in buckets)  # categorical: no histogram
    predictions = series(text, "kubeloop_predictions_total")
    assert sum(predictions.values()) == 4 and set(predictions) == {
        f'model="logistic-regression",class="{c}"' for c in ("low", "mid", "high")
    }


def test_requests_latency_and_batches(model: Model) -> None:
    metrics = Metrics(model)
    metrics.request("v2", 200, 0.00008)
    metrics.request("v2", 400, 0.0003)
    metrics.batch(np.zeros((3, 20), np.float32), model.predict(np.zeros((3, 20), np.float32)))
    text = metrics.render().decode()
    assert series(text, "kubeloop_requests_total") == {
        'model="logistic-regression",protocol="v2",code="200"': 1,
        'model="logistic-regression",protocol="v2",code="400"': 1,
    }
    latency = series(text, "kubeloop_request_duration_seconds_bucket")
    assert latency['model="logistic-regression",protocol="v2",le="0.0001"'] == 1
    assert latency['model="logistic-regression",protocol="v2",le="+Inf"'] == 2
    batches = series(text, "kubeloop_batch_size_bucket")
    assert (
        batches['model="logistic-regression",le="2.0"'] == 0
        and batches['model="logistic-regression",le="4.0"'] == 1
    )
    assert f'sha256="{model.sha256}"' in text


def test_regression_predictions_histogram(tmp_path: Path) -> None:
    build_model_dir(tmp_path, "linear_regression")
    model = Model(tmp_path)
    metrics = Metrics(model)
    x = np.zeros((2, 20), np.float32)
    metrics.batch(x, model.predict(x))
    counts = series(metrics.render().decode(), "kubeloop_prediction_value_count")
    assert counts == {'model="linear-regression"': 2}


def test_category_values_arrive_as_numbers() -> None:
    from kubeloop.runtime.serve.metrics import _category_index

    assert _category_index(["True", "False", "3", "2.5", "red"]) == {1.0: 0, 0.0: 1, 3.0: 2, 2.5: 3}


@pytest.mark.parametrize("batch_rows", [1, 7, 300])
def test_counts_are_exact_whatever_the_batch_sizes(model: Model, batch_rows: int) -> None:
    """Rows are buffered and binned in passes; batches that straddle a pass lose or double nothing."""
    from kubeloop import stats

    metrics = Metrics(model)
    x = np.random.default_rng(batch_rows).normal(size=(1001, 20)).astype(np.float32)
    x[5, 0] = np.nan  # not counted, like the baseline's nulls
    for start in range(0, len(x), batch_rows):
        chunk = x[start : start + batch_rows]
        metrics.batch(chunk, model.predict(chunk))
        if start == 490:
            metrics.render()  # a scrape in the middle bins what is buffered so far
    text = metrics.render().decode()
    edges = model.baseline["features"]["f0"]["edges"]
    f0 = [
        v
        for k, v in series(text, "kubeloop_feature_value_bucket").items()
        if 'feature="f0"' in k and "+Inf" not in k
    ]
    assert f0 == np.cumsum(stats.bin_counts(edges, x[:, 0]))[: len(edges)].tolist()
    assert series(text, "kubeloop_feature_value_count")['model="logistic-regression",feature="f0"'] == 1000
    predicted = np.bincount(model.predict(x).labels, minlength=3).tolist()
    by_class = series(text, "kubeloop_predictions_total")
    assert [by_class[f'model="logistic-regression",class="{c}"'] for c in ("low", "mid", "high")] == predicted


def test_float32_inputs_fall_in_the_bins_training_counted_them_in(tmp_path: Path) -> None:
    """Training bins float64 data; the same rows arrive as float32 (5.8 becomes 5.8000002). Sent back
    unchanged, they must land in the baseline's own bins: iris traffic otherwise showed PSI 0.74 against
    its own training data, because its many repeated values sit exactly on the quantile edges."""
    from sklearn.datasets import load_iris

    from kubeloop import stats

    build_model_dir(tmp_path, "logistic_regression", n_features=20)
    data = load_iris().data  # float64, values with one decimal, many repeated
    column = np.resize(data[:, 0], 2000)
    baseline = json.loads((tmp_path / "baseline.json").read_text())
    baseline["features"]["f0"] = stats.numeric_summary(column)
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    model = Model(tmp_path)
    metrics = Metrics(model)
    x = np.zeros((len(column), 20), np.float32)
    x[:, 0] = column  # float64 -> float32, as a V2 FP32 request carries it
    metrics.batch(x, model.predict(x))
    metrics.flush()
    got = metrics.numeric.counts[0, : len(baseline["features"]["f0"]["counts"])].tolist()
    assert got == baseline["features"]["f0"]["counts"]


def test_connection_counts_are_rendered_every_reason_from_zero(model: Model) -> None:
    counts = ConnectionCounts()
    counts.refused = 3
    counts.closed["header_timeout"] += 2
    text = Metrics(model).render(counts, open_connections=7).decode()
    parse_metrics(text)  # strict Prometheus text, as the operator reads it
    m = 'model="logistic-regression"'
    assert series(text, "kubeloop_connections_open") == {m: 7}
    assert series(text, "kubeloop_connections_refused_total") == {m: 3}
    assert series(text, "kubeloop_connections_closed_total") == {
        f'{m},reason="{reason}"': n
        for reason, n in [
            ("header_timeout", 2),
            ("request_timeout", 0),
            ("idle_timeout", 0),
            ("linger_timeout", 0),
            ("unread_answers", 0),
        ]
    }
