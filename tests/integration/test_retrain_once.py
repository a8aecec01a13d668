"""A Monitor's retrain makes exactly one TrainingJob per decision, even when the operator dies between
creating it and writing its status (the decision is then taken again from the same status): against the
real API server.

The crash is the one fault here that cannot be produced on cue, so it is reproduced by its effect: the
second decision runs on the status the first never wrote.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest

from kubeloop.analysis import Check
from kubeloop.api import MONITOR
from kubeloop.api.monitor import MonitorSpec
from kubeloop.builders.settings import Settings
from kubeloop.controllers.cache import Cache
from kubeloop.controllers.framework import Context
from kubeloop.controllers.kube import Kube, load_client
from kubeloop.controllers.monitor import retrain


def test_a_retrain_decision_taken_twice_makes_one_training_job(
    kubectl: object, namespace: str, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    spec = {
        "deploymentRef": {"name": "iris"},
        "drift": {},
        "actions": {
            "retrain": {
                "template": {
                    "labels": {"kubeloop.io/model": "iris"},
                    "spec": {
                        "datasetRef": {"name": "iris", "version": "0123456789abcdef"},
                        "model": {"estimator": "LogisticRegression"},
                    },
                },
                "maxRetrains": 3,
            }
        },
    }
    body = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "Monitor",
        "metadata": {"name": "iris", "namespace": namespace, "uid": "u", "generation": 1},
        "spec": spec,
        "status": {"retrains": 0},
    }
    kube = Kube(load_client())
    drifted = Check("inputDrift", "fail", 0.6, 0.2, 500.0, "1 of 4 features drifted: petal length (psi 0.6)")
    now = datetime.datetime.now(datetime.UTC)
    made = []
    for _ in range(2):  # the second run sees the status the first could not write
        ctx = Context(body, MONITOR, Cache({}), kube, Settings(), logging.getLogger("test"))
        fields: dict[str, object] = {}
        retrain(ctx, MonitorSpec.model_validate(spec), drifted, fields, now)
        made.append(fields)
    jobs = json.loads(kubectl("get", "trainingjobs", "-n", namespace, "-o", "json").stdout)["items"]  # type: ignore[operator]
    assert [j["metadata"]["name"] for j in jobs] == ["iris-retrain-1"]
    job = jobs[0]
    assert job["metadata"]["labels"] == {"kubeloop.io/model": "iris", "kubeloop.io/retrained-by": "iris"}
    assert "version" not in job["spec"]["datasetRef"], "a retrain uses the newest Dataset version"
    assert made[0]["retrains"] == made[1]["retrains"] == 1
    assert "created" in made[0]["lastAction"]["reason"] and "already made" in made[1]["lastAction"]["reason"]  # type: ignore[index]
