"""Helpers of the end-to-end tests: read what a user reads (status, conditions, events) and run pods."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
Obj = dict[str, Any]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
import demo  # noqa: E402

from support.polling import wait_for  # noqa: E402  (re-exported for the e2e tests)

# The node-local artifact store the operator is installed with, readable here as a host directory when the
# node is this host (the local cluster); store_listing reads whatever store the operator uses, from a pod.
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


def start_pod(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    image: str,
    command: list[str],
    *,
    volumes: list[Obj] | None = None,
    volume_mounts: list[Obj] | None = None,
    env_from: list[Obj] | None = None,
) -> None:
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
                    "volumeMounts": volume_mounts or [],
                    "envFrom": env_from or [],
                }
            ],
            "volumes": volumes or [],
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


def operator_env(kubectl: Kubectl) -> dict[str, str]:
    """The environment of the installed operator's container: its settings (KUBELOOP_STORE_URI, ...)."""
    selector = (
        f"app.kubernetes.io/name=kubeloop,app.kubernetes.io/instance={demo.RELEASE},"
        "app.kubernetes.io/component=operator"
    )
    found = items(kubectl, "deployment", demo.RELEASE_NAMESPACE, selector)
    assert len(found) == 1, f"expected one operator Deployment ({selector}), found {len(found)}"
    containers = found[0]["spec"]["template"]["spec"]["containers"]
    container = next(c for c in containers if c["name"] == "operator")
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


# Lists the artifact store through the store's own interface (kubeloop.runtime.store), run in a pod that
# gets the store as the operator's pods get it; prints one JSON object. "keys" are what Store.list gives
# (it hides temp files of unfinished writes); a volume store (file://, pvc://) also lists "paths": every
# file and directory under its root, temp files included. Both keep only names with a path component
# equal to argv[2] (a namespace: datasets/<namespace>/...).
STORE_PROBE = """
import json, sys
from kubeloop.runtime.store import open_store
uri, part = sys.argv[1], sys.argv[2]
store = open_store(uri)
found = {"uri": uri, "keys": [k for k in store.list() if part in k.split("/")], "paths": None}
root = getattr(store, "path", None)  # a volume store's directory; an S3 store has none
if root is not None:
    found["rootIsDir"] = root.is_dir()
    found["paths"] = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if part in p.relative_to(root).parts
    )
print(json.dumps(found))
"""


def store_listing(kubectl: Kubectl, namespace: str, image: str, part: str, timeout: float = 180) -> Obj:
    """What the operator's artifact store holds under names with the path component `part`, read from a
    pod in `namespace` (STORE_PROBE's JSON, plus "storeURI"): the store the installed operator is
    configured with (its Deployment's KUBELOOP_STORE_URI and KUBELOOP_STORE_SECRET), mounted read-only
    the way the runtime contract mounts it (file:// a node directory at the same path, pvc:// the claim at
    /mnt/pvc/<claim>, s3:// the credentials Secret as env vars)."""
    env = operator_env(kubectl)
    uri = env.get("KUBELOOP_STORE_URI", "")
    assert uri, f"the operator has no KUBELOOP_STORE_URI: {env}"
    parsed = urlparse(uri)
    # /tmp writable (HOME is /tmp in the images), as in the runtime's own pods.
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    if parsed.scheme == "file":
        # type Directory: the pod does not start unless the store directory exists on the node.
        volumes.append({"name": "store", "hostPath": {"path": parsed.path, "type": "Directory"}})
        mounts.append({"name": "store", "mountPath": parsed.path, "readOnly": True})
    elif parsed.scheme == "pvc":
        claim = {"claimName": parsed.netloc, "readOnly": True}
        volumes.append({"name": "store", "persistentVolumeClaim": claim})
        mounts.append({"name": "store", "mountPath": f"/mnt/pvc/{parsed.netloc}", "readOnly": True})
    secret = env.get("KUBELOOP_STORE_SECRET")
    env_from = [{"secretRef": {"name": secret, "optional": True}}] if secret else []
    name = "store-probe"
    start_pod(
        kubectl,
        namespace,
        name,
        image,
        ["python3", "-c", STORE_PROBE, uri, part],
        volumes=volumes,
        volume_mounts=mounts,
        env_from=env_from,
    )
    try:
        out = pod_output(kubectl, namespace, name, timeout)
    finally:
        kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
    listing: Obj = json.loads(out.strip().splitlines()[-1])
    return {**listing, "storeURI": uri}


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
