"""The Monitor on a real node: traffic like the training data raises nothing, a shifted feature is flagged by
name and retrains, the retrained model rolls out by canary with no other step; an SLO breach rolls back.

Everything is real: the iris Dataset is ingested, TrainingJobs train, the servers count their inputs, the
operator scrapes them. The load generator (tests/support/load.py) sends rows of the iris data itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.datasets import load_iris

from kubeloop.runtime.serve.examples import build_model_dir
from support.bad_models import derive, publish_model
from support.e2e import (
    Kubectl,
    Obj,
    apply,
    conditions,
    events,
    get,
    iris_dataset,
    status,
    training_job,
    wait_condition,
    wait_for,
)
from support.load import start_load, stop_load

LABELS = {"kubeloop.io/model": "iris"}
PETAL_LENGTH = 2  # the column shifted


def iris_rows() -> list[list[float]]:
    return [[float(v) for v in row] for row in load_iris().data]


def md(name: str, model: Obj, **spec: object) -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "replicas": 1,
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            **spec,
        },
    }


def monitor(name: str, deployment: str, **spec: object) -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "Monitor",
        "metadata": {"name": name},
        "spec": {"deploymentRef": {"name": deployment}, "interval": "10s", **spec},
    }


def test_drift_is_flagged_by_feature_and_the_retrained_model_rolls_out_by_itself(
    kubectl: Kubectl, namespace: str, operator_installed: dict[str, str]
) -> None:
    first = training_job("iris-a", "LogisticRegression", {"max_iter": 300})
    first["metadata"]["labels"] = LABELS
    deployment = md(
        "iris",
        {"trainingJobRef": {"name": "iris-a"}},
        updatePolicy="Auto",
        trainingJobSelector={"matchLabels": LABELS},
        rollout={
            "strategy": "Canary",
            "steps": [{"weight": 50, "pause": "15s"}],
            "analysis": {"maxErrorRate": 0.05, "minRequests": 30},
            "progressDeadline": "3m",
        },
    )
    retrain_spec = training_job("x", "LogisticRegression", {"max_iter": 300, "C": 0.3})["spec"]
    watcher = monitor(
        "iris",
        "iris",
        slo={"maxErrorRate": 0.05, "window": "40s", "minRequests": 30},
        drift={"method": "psi", "window": "40s"},
        actions={
            "retrain": {
                "template": {"labels": LABELS, "spec": retrain_spec},
                "coolDown": "1h",
                "maxRetrains": 1,
            }
        },
    )
    apply(kubectl, namespace, iris_dataset(), first, deployment, watcher)
    wait_condition(
        kubectl, "modeldeployment", "iris", namespace, "Ready", timeout=420, unless=("Degraded", "True")
    )
    served = status(kubectl, "modeldeployment", "iris", namespace)["model"]
    assert served["trainingJob"] == "iris-a"

    # Traffic like the training data: no drift, SLO met, nothing retrained.
    load = start_load(kubectl, namespace, "iris", operator_installed["trainer"], iris_rows())

    def judged() -> Obj | None:
        c = conditions(kubectl, "monitor", "iris", namespace)
        return c if c["Drifted"]["status"] != "Unknown" and c["SLOViolated"]["status"] != "Unknown" else None

    calm = wait_for(judged, 120, "the Monitor's first verdicts", interval=3)
    quiet = stop_load(kubectl, namespace, load)
    print("in-distribution:", json.dumps(status(kubectl, "monitor", "iris", namespace), indent=1)[:3000])
    assert calm["Drifted"]["status"] == "False" and calm["Drifted"]["reason"] == "NoDrift", calm["Drifted"]
    assert calm["SLOViolated"]["status"] == "False", calm["SLOViolated"]
    assert conditions(kubectl, "monitor", "iris", namespace)["Ready"]["status"] == "True"
    assert not status(kubectl, "monitor", "iris", namespace).get("retrains")
    assert not quiet["codes"] and not quiet["errors"], quiet

    # One feature shifted: flagged by name, and a retrain is made.
    shifted = start_load(
        kubectl, namespace, "iris", operator_installed["trainer"], iris_rows(), shift={PETAL_LENGTH: 3.0}
    )
    drifted = wait_condition(kubectl, "monitor", "iris", namespace, "Drifted", timeout=120)
    print("drifted:", drifted)
    assert drifted["reason"] == "DriftDetected" and "petal_length" in drifted["message"], drifted
    mon = status(kubectl, "monitor", "iris", namespace)
    worst = mon["features"][0]
    assert worst["feature"].startswith("petal_length") and worst["verdict"] == "fail", mon["features"]
    wait_for(lambda: status(kubectl, "monitor", "iris", namespace).get("retrains") == 1, 60, "a retrain")
    mon = status(kubectl, "monitor", "iris", namespace)
    retrained = mon["lastAction"]["trainingJob"]
    assert mon["lastAction"]["type"] == "Retrain" and retrained == "iris-retrain-1", mon["lastAction"]
    job = get(kubectl, "trainingjob", retrained, namespace)
    assert job["metadata"]["labels"]["kubeloop.io/model"] == "iris"

    # updatePolicy Auto rolls the retrained model out through its canary, with no other step.
    def promoted() -> Obj | None:
        st = status(kubectl, "modeldeployment", "iris", namespace)
        model = st.get("model") or {}
        return st if model.get("trainingJob") == retrained and not st.get("canary") else None

    final = wait_for(promoted, 600, "the retrained model to be promoted", interval=3)
    stop_load(kubectl, namespace, shifted)
    assert final["lastRollout"]["result"] == "Promoted" and final["lastRollout"]["trainingJob"] == retrained
    assert final["previousModel"]["sha256"] == served["sha256"]
    # The chain is in the four resources: the new model's TrainingJob names its Dataset version.
    tj = status(kubectl, "trainingjob", retrained, namespace)
    dataset = status(kubectl, "dataset", "iris", namespace)
    assert tj["model"]["sha256"] == final["model"]["sha256"]
    assert tj["model"]["datasetVersion"] == dataset["version"], (tj, dataset)
    reasons = {e["reason"] for e in events(kubectl, namespace, "iris")}
    assert {"Retrain", "CanaryStarted", "Promoted"} <= reasons, reasons


@pytest.fixture
def two_models(
    kubectl: Kubectl, operator_installed: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, Obj]]:
    build_model_dir(tmp_path / "good", kind="logistic_regression", name="slo")
    derive(tmp_path / "good", tmp_path / "erroring", "erroring", feature=0)
    namespace = f"t-monitor-models-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        models = {}
        for name in ("good", "erroring"):
            uri, sha = publish_model(kubectl, namespace, tmp_path / name, operator_installed["trainer"])
            models[name] = {"uri": uri, "sha256": sha}
        yield models
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_an_slo_breach_rolls_back_to_the_previous_model(
    kubectl: Kubectl, namespace: str, two_models: dict[str, Obj], operator_installed: dict[str, str]
) -> None:
    from kubeloop.runtime.serve.examples import training_data

    good, bad = two_models["good"], two_models["erroring"]
    apply(kubectl, namespace, md("slo", good, rollout={"strategy": "Rolling"}))
    wait_condition(
        kubectl, "modeldeployment", "slo", namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    kubectl(
        "patch",
        "modeldeployment",
        "slo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": bad}}),
    )
    wait_for(
        lambda: (
            (status(kubectl, "modeldeployment", "slo", namespace).get("model") or {}).get("sha256")
            == bad["sha256"]
        ),
        180,
        "the erroring model to serve",
    )
    apply(
        kubectl,
        namespace,
        monitor(
            "slo",
            "slo",
            slo={"maxErrorRate": 0.02, "window": "40s", "minRequests": 50},
            actions={"rollback": True},
        ),
    )
    x, _ = training_data("logistic_regression", 20)
    rows = [[round(float(v), 4) for v in r] for r in x[:300]]
    load = start_load(kubectl, namespace, "slo", operator_installed["trainer"], rows)

    violated = wait_condition(kubectl, "monitor", "slo", namespace, "SLOViolated", timeout=180)
    assert violated["reason"] == "ObjectiveMissed" and "errorRate" in violated["message"], violated

    def rolled_back() -> Obj | None:
        st = status(kubectl, "modeldeployment", "slo", namespace)
        return st if (st.get("model") or {}).get("sha256") == good["sha256"] else None

    final = wait_for(rolled_back, 240, "the rollback to the previous model", interval=3)
    stop_load(kubectl, namespace, load)
    mon = status(kubectl, "monitor", "slo", namespace)
    assert mon["rejected"][-1]["sha256"] == bad["sha256"] and mon["lastAction"]["type"] == "Rollback"
    rejected = final["rejected"][-1]
    assert rejected["sha256"] == bad["sha256"] and rejected["reason"] == "Monitor slo", rejected
    progressing = conditions(kubectl, "modeldeployment", "slo", namespace)["Progressing"]
    assert progressing["reason"] == "ModelRejected" and bad["sha256"][:12] in progressing["message"]
    # The spec still names the bad model (never rewritten), and it is not served again.
    spec = get(kubectl, "modeldeployment", "slo", namespace)["spec"]
    assert spec["model"]["sha256"] == bad["sha256"]
