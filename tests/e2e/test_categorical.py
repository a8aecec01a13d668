"""A CSV with category columns, over http, on a real node: the Dataset ingests it, the TrainingJob trains a
model whose ONNX graph takes the raw strings, the ModelDeployment serves it, and its predictions from raw
strings (V2 BYTES beside FP32) equal the scikit-learn pipeline's, fitted here in-process on the same rows.

The CSV is served by an HTTP server of this test on the cluster's bridge address, which the pods reach."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.categorical import frame, train_categorical
from support.e2e import Kubectl, apply, pod_output, start_pod, status, wait_condition

NODE_IP = "10.244.0.1"  # cluster/localcluster.py: the bridge, where the host and the pods meet
STRINGS = ("city", "size")
FEATURES = ["a", "city", "b", "size"]

# A client pod: one V2 request, printed answer (a few tries: the Service may take a moment to route).
CLIENT = """
import json, sys, time, urllib.request
url, body = sys.argv[1], sys.argv[2].encode()
for attempt in range(20):
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            print(answer.read().decode())
            break
    except Exception as error:
        print("retry:", error, file=sys.stderr)
        time.sleep(1)
else:
    sys.exit("no answer")
"""


@pytest.fixture
def csv_url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "cities.csv").write_text(frame().to_csv(index=False))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer((NODE_IP, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{NODE_IP}:{server.server_address[1]}/cities.csv"
    server.shutdown()
    server.server_close()
    thread.join()


def objects(url: str) -> list[dict[str, Any]]:
    small = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    return [
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "cities"},
            "spec": {"source": {"url": url}, "schema": {"target": "label"}},
        },
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "cities-lr"},
            "spec": {
                "datasetRef": {"name": "cities"},
                "model": {"estimator": "LogisticRegression"},
                "categorical": {"unknown": "ignore"},
                "resources": small,
            },
        },
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "cities"},
            "spec": {
                "model": {"trainingJobRef": {"name": "cities-lr"}},
                "replicas": 1,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            },
        },
    ]


def test_a_csv_with_categories_trains_serves_and_predicts_from_raw_strings(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str], csv_url: str, tmp_path: Path
) -> None:
    apply(kubectl, namespace, *objects(csv_url))
    wait_condition(kubectl, "dataset", "cities", namespace, "Ready", timeout=240)
    wait_condition(
        kubectl, "trainingjob", "cities-lr", namespace, "Succeeded", timeout=400, unless=("Failed", "True")
    )
    model = status(kubectl, "trainingjob", "cities-lr", namespace)["model"]
    assert model["inputSignature"] == [
        {"name": "a", "type": "float"},
        {"name": "city", "type": "string"},
        {"name": "b", "type": "float"},
        {"name": "size", "type": "string"},
    ], model
    wait_condition(
        kubectl, "modeldeployment", "cities", namespace, "Ready", timeout=240, unless=("Degraded", "True")
    )

    # The reference: the same CSV, the trainer's steps and split, the pipeline fitted in this process.
    reference = train_categorical(tmp_path / "reference", "ignore", "LogisticRegression")
    rows = reference.x_test.copy()
    rows.loc[rows.index[:3], "city"] = "Tokyo"  # unseen in training: no category (unknown: ignore)
    body = {
        "inputs": [
            {
                "name": n,
                "datatype": "BYTES" if n in STRINGS else "FP32",
                "shape": [len(rows), 1],
                "data": rows[n].tolist(),
            }
            for n in FEATURES
        ]
    }
    url = (
        status(kubectl, "modeldeployment", "cities", namespace)["url"].rstrip("/") + "/v2/models/cities/infer"
    )
    start_pod(
        kubectl,
        namespace,
        "client",
        operator_installed["trainer"],
        ["python3", "-c", CLIENT, url, json.dumps(body)],
    )
    answer = json.loads(pod_output(kubectl, namespace, "client", timeout=180).strip().splitlines()[-1])
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_version"] == model["sha256"][:16], answer
    assert outputs["label"]["data"] == reference.pipeline.predict(rows).tolist()
    served = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(served, reference.pipeline.predict_proba(rows), atol=1e-5)
    print(
        f"served {len(rows)} rows from raw strings; max probability gap to scikit-learn "
        f"{float(np.abs(served - reference.pipeline.predict_proba(rows)).max()):.2g}"
    )
