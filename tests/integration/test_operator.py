"""The operator against a real API server: waiting conditions, children, restarts, garbage collection."""

from __future__ import annotations

import json
from typing import Any

import yaml

from support.polling import wait_for

SHA = "0" * 64


def apply(kubectl: Any, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "kubeloop.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body))


def get(kubectl: Any, namespace: str, resource: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", resource, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(kubectl: Any, namespace: str, resource: str, name: str, type_: str) -> dict[str, Any] | None:
    body = get(kubectl, namespace, resource, name) or {}
    found = [c for c in body.get("status", {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else None


def names(kubectl: Any, namespace: str, resource: str, selector: str) -> list[str]:
    out = kubectl("get", resource, "-n", namespace, "-l", selector, "-o", "name").stdout
    return sorted(out.split())


def test_dangling_references_are_waiting_conditions(operator: Any, kubectl: Any, namespace: str) -> None:
    apply(
        kubectl,
        namespace,
        "TrainingJob",
        "orphan",
        {"datasetRef": {"name": "missing"}, "model": {"estimator": "LogisticRegression"}},
    )
    apply(kubectl, namespace, "ModelDeployment", "orphan", {"model": {"trainingJobRef": {"name": "missing"}}})
    apply(kubectl, namespace, "Monitor", "orphan", {"deploymentRef": {"name": "missing"}, "drift": {}})
    waiting = {
        ("trainingjob", "Succeeded"): "WaitingForDataset",
        ("modeldeployment", "Ready"): "WaitingForTrainingJob",
        ("monitor", "Ready"): "WaitingForModelDeployment",
    }
    for (resource, type_), reason in waiting.items():
        found = wait_for(
            lambda r=resource, t=type_: condition(kubectl, namespace, r, "orphan", t), what=reason
        )
        assert found["reason"] == reason and "missing" in found["message"]
        assert found["observedGeneration"] == 1
    assert names(kubectl, namespace, "jobs", "kubeloop.io/trainingjob=orphan") == []
    # The Dataset appears: the TrainingJob now waits for its first version (no node runs the ingest here).
    apply(kubectl, namespace, "Dataset", "missing", {"source": {"builtin": "iris"}})
    wait_for(
        lambda: (
            "no ready version"
            in (condition(kubectl, namespace, "trainingjob", "orphan", "Succeeded") or {}).get("message", "")
        ),
        what="the TrainingJob to notice the Dataset",
    )


def test_estimator_outside_the_allow_list_fails_without_a_job(
    operator: Any, kubectl: Any, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        "TrainingJob",
        "evil",
        {"datasetRef": {"name": "d"}, "model": {"estimator": "Popen"}},
    )
    failed = wait_for(lambda: condition(kubectl, namespace, "trainingjob", "evil", "Failed"), what="Failed")
    assert failed["status"] == "True" and failed["reason"] == "EstimatorNotAllowed"
    assert "LogisticRegression" in failed["message"]
    assert names(kubectl, namespace, "jobs", "kubeloop.io/trainingjob=evil") == []


def test_a_custom_training_image_is_refused_by_default_without_a_job(
    operator: Any, kubectl: Any, namespace: str
) -> None:
    """spec.image runs with the store's credentials, so it is off unless the operator's admin allows it."""
    spec = {"datasetRef": {"name": "d"}, "model": {"estimator": "LogisticRegression"}}
    apply(kubectl, namespace, "TrainingJob", "custom", {**spec, "image": "registry.example.com/me/steal:1"})
    failed = wait_for(lambda: condition(kubectl, namespace, "trainingjob", "custom", "Failed"), what="Failed")
    assert failed["status"] == "True" and failed["reason"] == "ImageNotAllowed", failed
    assert "'registry.example.com/me/steal:1' is not allowed" in failed["message"], failed
    assert "operator.allowedTrainingImages" in failed["message"], failed
    assert names(kubectl, namespace, "jobs", "kubeloop.io/trainingjob=custom") == []


def test_children_are_owned_recreated_and_collected(operator: Any, kubectl: Any, namespace: str) -> None:
    apply(kubectl, namespace, "ModelDeployment", "iris", {"model": {"uri": "s3://b/models/x", "sha256": SHA}})
    deployment = wait_for(lambda: get(kubectl, namespace, "deployment", "iris"), what="the Deployment")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert wait_for(lambda: get(kubectl, namespace, "service", "iris"), what="the Service")
    ready = wait_for(lambda: condition(kubectl, namespace, "modeldeployment", "iris", "Ready"), what="Ready")
    assert ready["status"] == "False", "no pod loaded the model, so it cannot be Ready"

    kubectl("delete", "deployment", "iris", "-n", namespace, "--wait=true")
    recreated = wait_for(lambda: get(kubectl, namespace, "deployment", "iris"), what="the Deployment again")
    assert recreated["metadata"]["uid"] != deployment["metadata"]["uid"]

    kubectl("delete", "modeldeployment", "iris", "-n", namespace, "--wait=true")
    wait_for(lambda: get(kubectl, namespace, "deployment", "iris") is None, 90, "garbage collection")
    wait_for(lambda: get(kubectl, namespace, "service", "iris") is None, 90, "garbage collection")


def test_restart_mid_reconcile_makes_no_duplicate(start_operator: Any, kubectl: Any, namespace: str) -> None:
    apply(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": "iris"}})
    with start_operator() as first:
        # Stop as soon as the Job exists: the status may not be written yet.
        wait_for(lambda: names(kubectl, namespace, "jobs", "kubeloop.io/dataset=iris"), what="the ingest Job")
    assert first.exception is None
    with start_operator() as second:
        wait_for(
            lambda: ((get(kubectl, namespace, "dataset", "iris") or {}).get("status") or {}).get("ingest"),
            what="the ingest run in status",
        )
        apply(
            kubectl,
            namespace,
            "TrainingJob",
            "tj",
            {"datasetRef": {"name": "iris"}, "model": {"estimator": "LogisticRegression"}},
        )
        wait_for(
            lambda: condition(kubectl, namespace, "trainingjob", "tj", "Succeeded"), what="TrainingJob status"
        )
    assert second.exception is None
    assert names(kubectl, namespace, "jobs", "kubeloop.io/dataset=iris") == ["job.batch/iris-ingest-1-0"]
    status = get(kubectl, namespace, "dataset", "iris")["status"]  # type: ignore[index]
    assert status["ingest"]["job"] == "iris-ingest-1-0" and status["observedGeneration"] == 1
