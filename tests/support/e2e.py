"""Helpers of the end-to-end tests: read what a user reads (status, conditions, events) and run pods."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
Obj = dict[str, Any]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
import demo  # noqa: E402

from support.polling import wait_for  # noqa: E402  (re-exported for the e2e tests)

# The node-local artifact store the operator is installed with, readable here as a host directory.
STORE_ROOT = Path(demo.STORE_URI.removeprefix("file://"))


def apply(kubectl: Kubectl, namespace: str, *objects: Obj) -> None:
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def get(kubectl: Kubectl, kind: str, name: str, namespace: str) -> Obj:
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def items(kubectl: Kubectl, kind: str, namespace: str, selector: str | None = None) -> list[Obj]:
    args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(kubectl(*args).stdout)["items"]  # type: ignore[no-any-return]


def status(kubectl: Kubectl, kind: str, name: str, namespace: str) -> Obj:
    return get(kubectl, kind, name, namespace).get("status") or {}


def conditions(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Obj]:
    return {c["type"]: c for c in status(kubectl, kind, name, namespace).get("conditions") or []}


def wait_condition(
    kubectl: Kubectl,
    kind: str,
    name: str,
    namespace: str,
    type_: str,
    wanted: str = "True",
    timeout: float = 180,
    unless: tuple[str, str] | None = None,
) -> Obj:
    """Wait until condition `type_` has status `wanted`; fail at once when condition `unless` is met."""
    seen: dict[str, Obj] = {}

    def check() -> Obj | None:
        nonlocal seen
        seen = conditions(kubectl, kind, name, namespace)
        if unless and seen.get(unless[0], {}).get("status") == unless[1]:
            raise AssertionError(f"{kind}/{name}: {unless[0]}={unless[1]}: {seen[unless[0]].get('message')}")
        cond = seen.get(type_)
        return cond if cond and cond.get("status") == wanted else None

    try:
        return wait_for(check, timeout, f"{kind}/{name} {type_}={wanted}")  # type: ignore[no-any-return]
    except AssertionError as error:
        raise AssertionError(f"{error}; conditions: {json.dumps(seen, indent=1)}") from None


def events(kubectl: Kubectl, namespace: str, name: str) -> list[Obj]:
    found = kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(found.stdout)["items"]  # type: ignore[no-any-return]


def start_pod(kubectl: Kubectl, namespace: str, name: str, image: str, command: list[str]) -> None:
    """A one-shot pod (restartPolicy Never) running `command` in `image`, small and non-root."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": demo.RESTRICTED,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                }
            ],
        },
    }
    apply(kubectl, namespace, pod)


def pod_output(kubectl: Kubectl, namespace: str, name: str, timeout: float) -> str:
    """Wait for a one-shot pod to finish and return its log (fails if it did not succeed)."""
    phase = wait_for(
        lambda: (
            get(kubectl, "pod", name, namespace)["status"].get("phase") in ("Succeeded", "Failed")
            and get(kubectl, "pod", name, namespace)["status"]["phase"]
        ),
        timeout,
        f"pod {name} to finish",
    )
    out = kubectl("logs", name, "-n", namespace).stdout
    assert phase == "Succeeded", f"pod {name} {phase}:\n{out}"
    return out


def job_active(job: Obj) -> bool:
    finished = {c["type"] for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
    return not finished & {"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"}


def iris_dataset(name: str = "iris") -> Obj:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"source": {"builtin": "iris"}, "schema": {"target": "target"}},
    }


def training_job(name: str, estimator: str, params: Obj | None = None, **spec: Any) -> Obj:
    """A TrainingJob on the iris Dataset with small resource requests."""
    body: Obj = {
        "datasetRef": {"name": "iris"},
        "model": {"estimator": estimator, "params": params or {}},
        "split": {"testFraction": 0.25, "seed": 7},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        **spec,
    }
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }
