"""One whole loop as the operator leaves it in status: a Dataset, the TrainingJob trained on it, a retrain,
the ModelDeployment serving the first model with the retrain's model as a 20 % canary, and a Monitor that
found drift and made the retrain. Shared by the plugin's unit tests (pure rendering) and its integration
tests (written to a real API server through the status subresource)."""

from __future__ import annotations

import hashlib
from typing import Any

Obj = dict[str, Any]

DATA_SHA = hashlib.sha256(b"iris snapshot").hexdigest()
DATA_VERSION = DATA_SHA[:16]
SERVING_SHA = hashlib.sha256(b"model of iris-lr").hexdigest()
CANARY_SHA = hashlib.sha256(b"model of iris-watch-retrain-1").hexdigest()
T0 = "2026-12-01T10:00:00Z"
STORE = "s3://kubeloop/store"


def _condition(type_: str, status: str, reason: str, message: str = "") -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": T0}


def _model(sha: str, params: Obj) -> Obj:
    return {
        "uri": f"{STORE}/models/{sha}",
        "sha256": sha,
        "datasetVersion": DATA_VERSION,
        "task": "classification",
        "params": params,
        "inputSignature": [{"name": f, "type": "float"} for f in ("sepal_length", "sepal_width")],
        "libraryVersions": {"scikit-learn": "1.6.1", "skl2onnx": "1.18.0"},
    }


def _job(name: str, sha: str, accuracy: float, params: Obj) -> tuple[Obj, Obj]:
    spec = {
        "datasetRef": {"name": "iris"},
        "model": {"estimator": "LogisticRegression", "params": params},
        "gate": {"minimums": {"accuracy": 0.85}},
    }
    status = {
        "observedGeneration": 1,
        "conditions": [
            _condition("Succeeded", "True", "Trained", "the model was trained and exported"),
            _condition("GatePassed", "True", "GateMet", "accuracy 0.967 meets the minimum 0.85"),
        ],
        "dataset": {
            "name": "iris",
            "version": DATA_VERSION,
            "artifactURI": f"{STORE}/datasets/iris/{DATA_SHA}",
        },
        "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.002},
        "model": _model(sha, params),
        "trials": [
            {
                "index": 0,
                "job": f"{name}-0",
                "params": params,
                "state": "Succeeded",
                "metrics": {"accuracy": accuracy},
            }
        ],
        "bestTrial": 0,
        "startTime": T0,
        "completionTime": "2026-12-01T10:01:30Z",
    }
    return {"kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}, status


def chain(namespace: str) -> list[tuple[Obj, Obj]]:
    """(object without status, its status) for each object of the loop, parents first."""
    dataset = (
        {"kind": "Dataset", "metadata": {"name": "iris"}, "spec": {"source": {"builtin": "iris"}}},
        {
            "observedGeneration": 1,
            "conditions": [
                _condition("Ready", "True", "Ingested", "version ready"),
                _condition("Validated", "True", "Ingested", "passed"),
            ],
            "version": DATA_VERSION,
            "sha256": DATA_SHA,
            "rows": 150,
            "columns": 5,
            "artifactURI": f"{STORE}/datasets/iris/{DATA_SHA}",
        },
    )
    first = _job("iris-lr", SERVING_SHA, 0.967, {"C": 1.0})
    retrain = _job("iris-watch-retrain-1", CANARY_SHA, 0.973, {"C": 10.0})
    deployment = (
        {
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {"trainingJobRef": {"name": "iris-lr"}},
                "replicas": 2,
                "rollout": {"strategy": "Canary", "steps": [{"weight": 20, "pause": "1m"}, {"weight": 50}]},
            },
        },
        {
            "observedGeneration": 1,
            "conditions": [
                _condition("Ready", "True", "ModelServing", "2 replicas serve the model"),
                _condition("Progressing", "True", "CanaryProgressing", "step 1 of 2"),
                _condition("Degraded", "False", "Healthy"),
            ],
            "url": f"http://iris.{namespace}.svc:8080",
            "model": {
                "uri": f"{STORE}/models/{SERVING_SHA}",
                "sha256": SERVING_SHA,
                "trainingJob": "iris-lr",
                "since": T0,
            },
            "wantedSha256": CANARY_SHA,
            "replicas": 2,
            "readyReplicas": 2,
            "canary": {
                "sha256": CANARY_SHA,
                "uri": f"{STORE}/models/{CANARY_SHA}",
                "trainingJob": "iris-watch-retrain-1",
                "phase": "Analysing",
                "step": 0,
                "weight": 20,
                "replicas": 1,
                "observedWeight": 18.5,
                "stepStartTime": "2026-12-01T11:00:00Z",
                "checks": [
                    {
                        "name": "errorRate",
                        "verdict": "pass",
                        "value": 0.0,
                        "threshold": 0.01,
                        "samples": 412,
                        "message": "0 of 412 requests failed",
                    },
                ],
            },
        },
    )
    monitor = (
        {
            "kind": "Monitor",
            "metadata": {"name": "iris-watch"},
            "spec": {"deploymentRef": {"name": "iris"}, "drift": {"method": "psi"}},
        },
        {
            "observedGeneration": 1,
            "conditions": [
                _condition("Ready", "True", "Checked", "checked"),
                _condition("Drifted", "True", "DriftDetected", "petal_length drifted"),
                _condition("SLOViolated", "False", "WithinObjectives", "within objectives"),
            ],
            "lastCheckTime": "2026-12-01T10:58:00Z",
            "servedSha256": SERVING_SHA,
            "checks": [
                {
                    "name": "inputDrift",
                    "verdict": "fail",
                    "value": 0.41,
                    "threshold": 0.2,
                    "samples": 600,
                    "message": "petal_length PSI 0.41 above 0.2",
                },
            ],
            "features": [
                {
                    "feature": "sepal_length",
                    "verdict": "pass",
                    "method": "psi",
                    "score": 0.02,
                    "samples": 600,
                },
                {
                    "feature": "petal_length",
                    "verdict": "fail",
                    "method": "psi",
                    "score": 0.41,
                    "samples": 600,
                },
            ],
            "slo": {"errorRate": 0.0, "p99LatencyMs": 3.1, "requests": 600, "violated": False},
            "lastAction": {
                "type": "Retrain",
                "reason": "petal_length drifted (PSI 0.41)",
                "time": "2026-12-01T10:58:00Z",
                "trainingJob": "iris-watch-retrain-1",
            },
            "retrains": 1,
        },
    )
    return [dataset, first, retrain, deployment, monitor]


def with_status(namespace: str) -> list[Obj]:
    """The objects as the API server returns them (status included)."""
    return [
        {**obj, "metadata": {**obj["metadata"], "namespace": namespace}, "status": status}
        for obj, status in chain(namespace)
    ]
