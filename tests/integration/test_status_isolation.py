"""A status the API server refuses is a condition on that object, and the others keep being reconciled.

The refusal is real: a ValidatingAdmissionPolicy of the API server denies status updates that carry
status.url for ModelDeployments labelled kubeloop-test/refuse-status, as a webhook or a stricter schema of
a cluster could.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from support.polling import wait_for

SHA = "0" * 64
POLICY = "kubeloop-test-refuse-status"


@pytest.fixture
def refusing_policy(kubectl: Any) -> Iterator[None]:
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["kubeloop.io"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["modeldeployments/status"],
                    }
                ],
                "objectSelector": {"matchLabels": {"kubeloop-test/refuse-status": "true"}},
            },
            "validations": [
                {
                    "expression": "!has(object.status) || !has(object.status.url)",
                    "message": "this cluster's policy refuses status.url",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    yield
    kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", POLICY, check=False)


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"model": {"uri": "s3://kubeloop-test/store/models/x", "sha256": SHA}},
    }


def get(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "modeldeployment", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out))


def test_a_refused_status_is_a_condition_and_others_go_on(
    refusing_policy: None, operator: Any, kubectl: Any, namespace: str
) -> None:
    # The policy takes a moment to reach the API server's admission chain: probe it before relying on it.
    probe = deployment("probe", {"kubeloop-test/refuse-status": "true"})
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(probe))

    def policy_in_force() -> bool:
        tried = kubectl(
            "patch", "modeldeployment", "probe", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", '{"status": {"url": "http://probe"}}', "--dry-run=server", check=False,
        )  # fmt: skip
        return tried.returncode != 0 and "refuses status.url" in tried.stderr

    wait_for(policy_in_force, 60, "the admission policy to be in force")
    refused, accepted = "refused", "accepted"
    objects = [deployment(refused, {"kubeloop-test/refuse-status": "true"}), deployment(accepted, {})]
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))

    def rejected_condition() -> dict[str, Any] | None:
        status = get(kubectl, namespace, refused).get("status") or {}
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        return ready[0] if ready and ready[0]["reason"] == "StatusRejected" else None

    condition = wait_for(rejected_condition, 60, "the refused status to show as a condition")
    assert condition["status"] == "Unknown", condition
    assert "this cluster's policy refuses status.url" in condition["message"], condition
    assert "url" not in get(kubectl, namespace, refused)["status"]
    # The other object of the same kind, in the same namespace, got its whole status.
    wait_for(lambda: get(kubectl, namespace, accepted).get("status", {}).get("url"), 60, "the other status")

    def event_reasons() -> set[str]:
        out = kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={refused}",
            "-o",
            "json",
        ).stdout
        return {e["reason"] for e in json.loads(out)["items"]}

    wait_for(lambda: "StatusRejected" in event_reasons(), 30, "a StatusRejected Event")
