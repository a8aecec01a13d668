"""The metrics API (metrics-server, aggregated): `kubectl top`, and a CPU autoscaler that scales up."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from support.cluster import DEFAULT_KUBECONFIG, STATE
from support.polling import wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

# A busy loop held to 100m by its CPU limit: 200 % of its 50m request, so a 50 % target wants more
# replicas, while the two at most cost the 2-core test machine a fifth of a core.
BUSY = ["sh", "-c", "while :; do :; done"]
RESOURCES = {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}

_CPU_UNITS = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0}
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "": 1}


def cores(quantity: str) -> float:
    """A CPU quantity as metrics-server writes it ("1234567n", "12m", "1") in cores."""
    number = quantity.rstrip("num")
    return float(number) * _CPU_UNITS[quantity[len(number) :]]


def memory_bytes(quantity: str) -> float:
    """A memory quantity ("12345Ki") in bytes."""
    number = quantity.rstrip("KMGik")
    return float(number) * _MEMORY_UNITS[quantity[len(number) :]]


@pytest.fixture
def metrics_api(kubectl: Kubectl) -> None:
    res = kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json", check=False)
    if res.returncode != 0 and STATE.kubeconfig != DEFAULT_KUBECONFIG:
        pytest.skip(f"{STATE.kubeconfig} has no metrics.k8s.io API (install metrics-server there)")
    assert res.returncode == 0, f"the local cluster registers metrics.k8s.io at `up`: {res.stderr}"
    conditions = {c["type"]: c["status"] for c in json.loads(res.stdout)["status"].get("conditions", [])}
    assert conditions.get("Available") == "True", conditions


def _apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )


def _busy_deployment(namespace: str, image: str) -> dict[str, Any]:
    labels = {"app": "busy"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "busy", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "busy",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": BUSY,
                            "resources": RESOURCES,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _rollout(kubectl: Kubectl, namespace: str) -> None:
    res = kubectl("rollout", "status", "deployment/busy", "-n", namespace, "--timeout=180s", check=False)
    if res.returncode != 0:
        pods = kubectl("describe", "pods", "-n", namespace, check=False).stdout
        raise AssertionError(f"the busy Deployment did not roll out: {res.stderr}\n{pods[-4000:]}")


def test_the_metrics_api_reports_a_running_pods_cpu_and_memory_and_kubectl_top_answers(
    kubectl: Kubectl, namespace: str, images: dict[str, str], metrics_api: None
) -> None:
    _apply(kubectl, _busy_deployment(namespace, images["trainer"]))
    _rollout(kubectl, namespace)

    def usage() -> dict[str, str] | None:
        res = kubectl(
            "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", check=False
        )
        if res.returncode != 0:
            return None
        items = json.loads(res.stdout)["items"]
        return items[0]["containers"][0]["usage"] if items and items[0]["containers"] else None

    # a pod's CPU is a rate: it appears after two scrapes of the kubelet (15 s apart)
    used = wait_for(usage, 120, "the busy pod's metrics")
    # the busy loop runs up to its 100m limit; a reading far below it would not be this pod's
    assert 0.02 <= cores(used["cpu"]) <= 0.15, used
    assert 1e5 < memory_bytes(used["memory"]) < 64 * 2**20, used

    top_node = kubectl("top", "node", "--no-headers").stdout.split()
    assert top_node[0] == "kubeloop-node" and top_node[1].endswith("m"), top_node
    top_pods = kubectl("top", "pod", "-A", "--no-headers").stdout
    rows = [line.split()[:2] for line in top_pods.splitlines()]
    assert any(ns == namespace and pod.startswith("busy-") for ns, pod in rows), top_pods
    assert any(ns == "kube-system" and pod.startswith("coredns-") for ns, pod in rows), top_pods


def test_a_cpu_autoscaler_of_a_busy_deployment_is_active_and_scales_it_up(
    kubectl: Kubectl, namespace: str, images: dict[str, str], metrics_api: None
) -> None:
    _apply(
        kubectl,
        _busy_deployment(namespace, images["trainer"]),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "busy", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
                "minReplicas": 1,
                "maxReplicas": 2,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )
    _rollout(kubectl, namespace)

    def hpa() -> dict[str, Any]:
        status: dict[str, Any] = json.loads(
            kubectl("get", "hpa", "busy", "-n", namespace, "-o", "json").stdout
        )["status"]
        return status

    def active() -> dict[str, Any] | None:
        status = hpa()
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        return status if conditions.get("ScalingActive", {}).get("status") == "True" else None

    def scaled_up() -> dict[str, Any] | None:
        status = hpa()
        return status if status.get("desiredReplicas") == 2 else None

    active_status = wait_for(active, 180, "the autoscaler's ScalingActive condition to be True")
    scaled = wait_for(
        scaled_up, 120, f"the autoscaler to want 2 replicas (when it became active: {active_status})"
    )
    utilization = scaled["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
    assert utilization > 50, scaled  # it scaled because the pods use more than the target

    def ready_replicas() -> int:
        deployment = json.loads(kubectl("get", "deployment", "busy", "-n", namespace, "-o", "json").stdout)
        return int(deployment["status"].get("readyReplicas", 0))

    wait_for(
        lambda: ready_replicas() == 2, 180, "the Deployment to run the 2 replicas the autoscaler asked for"
    )
