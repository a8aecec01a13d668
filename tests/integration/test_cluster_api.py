"""The local cluster's control plane is a real Kubernetes: schema validation, RBAC, garbage collection."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.clustertest.kubeloop.io}
spec:
  group: clustertest.kubeloop.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
"""


def test_api_server_rejects_an_object_that_breaks_a_crd_schema(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.clustertest.kubeloop.io", "--timeout=60s")
    bad = {
        "apiVersion": "clustertest.kubeloop.io/v1",
        "kind": "Widget",
        "metadata": {"name": "too-big", "namespace": namespace},
        "spec": {"size": 99},
    }
    res = kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert res.returncode != 0
    assert "spec.size" in res.stderr and "should be less than or equal to 10" in res.stderr
    good = {**bad, "metadata": {"name": "fine", "namespace": namespace}, "spec": {"size": 3}}
    kubectl("apply", "-f", "-", input=json.dumps(good))
    assert kubectl("get", "widget", "fine", "-n", namespace, "-o", "jsonpath={.spec.size}").stdout == "3"


def test_rbac_is_enforced_for_a_service_account(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:reader"
    assert (
        kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", who, check=False).stdout.strip()
        == "no"
    )
    kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "r",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    assert kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", who).stdout.strip() == "yes"


def test_deleting_an_owner_garbage_collects_its_children(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace)
    uid = kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(child))
    kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode != 0:
            return
        time.sleep(0.5)
    raise AssertionError("the garbage collector did not delete the child of a deleted owner within 60s")
