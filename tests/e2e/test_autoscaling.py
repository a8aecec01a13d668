"""Autoscaling on a real node with a real metrics API (metrics-server): the HPA scales the stable server up
under load and down after it, and a canary started meanwhile is neither counted nor resized by it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeloop.runtime.serve.examples import build_model_dir, training_data
from support.bad_models import derive, publish_model
from support.e2e import Kubectl, Obj, apply, get, status, wait_condition, wait_for
from support.load import start_load, stop_load


@pytest.fixture
def models(kubectl: Kubectl, operator_installed: dict[str, str], tmp_path: Path) -> Iterator[list[Obj]]:
    build_model_dir(tmp_path / "a", kind="logistic_regression", name="scaled")
    derive(tmp_path / "a", tmp_path / "b", "slow", milliseconds=1)
    namespace = f"t-hpa-models-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        found = []
        for name in ("a", "b"):
            uri, sha = publish_model(kubectl, namespace, tmp_path / name, operator_installed["trainer"])
            found.append({"uri": uri, "sha256": sha})
        yield found
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def hpa(kubectl: Kubectl, namespace: str) -> Obj:
    return get(kubectl, "hpa", "scaled", namespace)


def test_the_hpa_scales_the_stable_pods_and_leaves_a_canary_alone(
    kubectl: Kubectl, namespace: str, models: list[Obj], operator_installed: dict[str, str]
) -> None:
    first, second = models
    deployment = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scaled"},
        "spec": {
            "model": first,
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetCpuUtilization": 50,
                "scaleDownStabilization": "15s",
            },
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "pause": "20s"}],
                "analysis": {"maxErrorRate": 0.05, "minRequests": 30},
            },
            # A small CPU request, so that the load generator's traffic is well above 50 % of it.
            "resources": {"requests": {"cpu": "20m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }
    apply(kubectl, namespace, deployment)
    wait_condition(
        kubectl, "modeldeployment", "scaled", namespace, "Ready", timeout=180, unless=("Degraded", "True")
    )
    assert hpa(kubectl, namespace)["spec"]["scaleTargetRef"]["name"] == "scaled"

    x, _ = training_data("logistic_regression", 20)
    rows = [[round(float(v), 4) for v in r] for r in x[:200]]
    load = start_load(kubectl, namespace, "scaled", operator_installed["trainer"], rows, pause=0.0)

    def scaled_up() -> Obj | None:
        st = hpa(kubectl, namespace).get("status", {})
        return st if st.get("desiredReplicas", 1) > 1 else None

    up = wait_for(scaled_up, 240, "the HPA to scale up", interval=3)
    print("HPA under load:", json.dumps(up))
    active = {c["type"]: c for c in up.get("conditions", [])}.get("ScalingActive", {})
    assert active.get("status") == "True", up

    # A canary now: its replica count is fixed at its step's start, and the HPA does not count its pods.
    patch = {"spec": {"model": second}}
    kubectl("patch", "modeldeployment", "scaled", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    canary = wait_for(
        lambda: status(kubectl, "modeldeployment", "scaled", namespace).get("canary"), 60, "the canary"
    )
    selector = hpa(kubectl, namespace).get("status", {})
    stable_pods = kubectl(
        "get", "pods", "-n", namespace, "-l", "kubeloop.io/track=stable", "-o", "name"
    ).stdout.split()
    print("canary:", canary, "hpa:", selector)

    def promoted() -> Obj | None:
        st = status(kubectl, "modeldeployment", "scaled", namespace)
        return (
            st if (st.get("model") or {}).get("sha256") == second["sha256"] and not st.get("canary") else None
        )

    final = wait_for(promoted, 300, "the canary's promotion during scaling", interval=3)
    counts = stop_load(kubectl, namespace, load)
    assert final["lastRollout"]["result"] == "Promoted", final["lastRollout"]
    assert not counts["codes"] and not counts["errors"], counts
    assert stable_pods, "stable pods carry their track label"
    # The Deployment's replicas are the HPA's, never the operator's.
    replicas = get(kubectl, "deployment", "scaled", namespace)["spec"]["replicas"]
    assert replicas == hpa(kubectl, namespace)["status"]["desiredReplicas"]

    # Without load it scales back down after its stabilization window.
    wait_for(
        lambda: hpa(kubectl, namespace).get("status", {}).get("desiredReplicas") == 1,
        300,
        "the HPA to scale down",
        interval=5,
    )
