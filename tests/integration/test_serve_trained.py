"""The server serves what the trainer writes: ingest and train through the runtime's entry point (the
runtime contract in docs/contracts.md), then the model directory from the store behind a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from test_serve_http import Server


def runtime(command: str, config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    log = tmp_path / f"result-{command}"
    env = {**os.environ, "KUBELOOP_CONFIG": json.dumps(config), "KUBELOOP_TERMINATION_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-m", "kubeloop.runtime", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return dict(json.loads(log.read_text()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("loop")
    base = {"namespace": "ml", "storeURI": f"file://{tmp / 'store'}"}
    ingested = runtime(
        "ingest",
        {**base, "name": "iris", "source": {"builtin": "iris"}, "validation": {"duplicates": "keep"}},
        tmp,
    )
    result = runtime(
        "train",
        {
            **base,
            "name": "iris-rf",
            "dataset": {
                "name": "iris",
                "version": ingested["version"],
                "artifactURI": ingested["artifactURI"],
            },
            "model": {
                "estimator": "RandomForestClassifier",
                "params": {"n_estimators": 20, "random_state": 0},
            },
            "split": {"testFraction": 0.3, "seed": 1},
            "gate": {"minimums": {"accuracy": 0.8}},
        },
        tmp,
    )
    return {"dir": tmp / "store" / "models" / result["model"]["sha256"], "sha256": result["model"]["sha256"]}


def test_a_trained_model_serves_and_predicts_iris(trained: dict[str, Any]) -> None:
    s = Server(
        "--model-dir", str(trained["dir"]), "--expected-sha256", trained["sha256"], "--model-name", "iris"
    )
    try:
        ready = s.wait_for("ready")
        assert ready["sha256"] == trained["sha256"]
        meta = requests.get(f"{s.url}/v2/models/iris").json()
        iris = load_iris()
        x = iris.data.astype(np.float32)
        body = {
            "inputs": [
                {
                    "name": meta["inputs"][0]["name"],
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.tolist(),
                }
            ]
        }
        r = requests.post(f"{s.url}/v2/models/iris/infer", json=body)
        assert r.status_code == 200, r.text
        labels = r.json()["outputs"][0]["data"]
        assert np.mean(np.asarray(labels) == iris.target) > 0.9
        metrics = requests.get(f"{s.url}/metrics").text
        card = json.loads((trained["dir"] / "model-card.json").read_text())
        baseline = json.loads((trained["dir"] / "baseline.json").read_text())
        first = card["features"][0]
        edges = baseline["features"][first]["edges"]
        assert (
            f'kubeloop_feature_value_bucket{{model="iris",feature="{first}",le="{float(edges[0])!r}"}}'
            in metrics
        )
        assert f'kubeloop_feature_value_count{{model="iris",feature="{first}"}} 150' in metrics
    finally:
        assert s.stop() == 0
