"""The whole loop on a real node, the operator installed by Helm: Dataset, TrainingJob, ModelDeployment."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from support.e2e import STORE_ROOT, Kubectl, demo, status

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def test_dataset_to_served_model(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    kubectl("apply", "-n", namespace, "-f", str(SAMPLES))

    demo.wait_for_condition("dataset", "iris", namespace, "Ready", 300)
    dataset = status(kubectl, "dataset", "iris", namespace)
    assert len(dataset["version"]) >= 16 and dataset["rows"] == 150

    demo.wait_for_condition("trainingjob", "iris-logreg", namespace, "Succeeded", 600, failed="Failed")
    job = status(kubectl, "trainingjob", "iris-logreg", namespace)
    assert job["metrics"]["accuracy"] >= 0.85
    assert len(job["trials"]) == 3, job["trials"]
    assert dataset["version"].startswith(job["model"]["datasetVersion"][:16])
    sha = job["model"]["sha256"]
    model_file = next(STORE_ROOT.glob(f"**/models/{sha}/model.onnx"))
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == sha

    demo.wait_for_condition("modeldeployment", "iris", namespace, "Ready", 300)
    served = status(kubectl, "modeldeployment", "iris", namespace)
    assert served["model"]["sha256"] == sha

    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    body = {
        "inputs": [
            {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": [x for row in rows for x in row]}
        ]
    }
    url = served["url"].rstrip("/") + "/v2/models/iris/infer"
    answer = json.loads(demo.predict_in_cluster(namespace, url, operator_installed["trainer"], body))
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"input": np.array(rows, dtype=np.float32)})[:2]
    assert outputs["label"] == labels.tolist()
    assert np.allclose(np.array(outputs["probabilities"]).reshape(3, -1), probabilities, atol=1e-6)


def test_the_same_data_gives_the_same_version(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    dataset = (SAMPLES / "01-dataset-iris.yaml").read_text()
    kubectl("apply", "-n", namespace, "-f", "-", input=dataset)
    kubectl("apply", "-n", namespace, "-f", "-", input=dataset.replace("name: iris", "name: iris-again"))
    demo.wait_for_condition("dataset", "iris", namespace, "Ready", 300)
    demo.wait_for_condition("dataset", "iris-again", namespace, "Ready", 300)
    first = status(kubectl, "dataset", "iris", namespace)["version"]
    assert status(kubectl, "dataset", "iris-again", namespace)["version"] == first


def test_helm_test_pod_passes(
    helm: Callable[..., subprocess.CompletedProcess[str]], operator_installed: dict[str, str]
) -> None:
    """`helm test` of the installed release: its test pod checks the CRDs and the operator from inside."""
    res = helm("test", demo.RELEASE, "--namespace", demo.RELEASE_NAMESPACE, "--timeout", "3m")
    assert "Phase:          Succeeded" in res.stdout, res.stdout  # helm exits non-zero on a failed test too
