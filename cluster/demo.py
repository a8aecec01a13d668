#!/usr/bin/env python3
"""The whole loop on the local cluster: the operator installed by Helm, the samples applied, a prediction.

    python3 cluster/demo.py [--namespace kubeloop-demo]

Expects a running cluster with the project's images on its node (`make demo` does both first). Prints each
step's outcome as it comes, then `kubectl get kubeloop`. Standard library only; the e2e tests reuse
`install_operator` and `wait_for_condition`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASE, RELEASE_NAMESPACE = "kubeloop", "kubeloop-system"
# The node-local artifact store that localcluster.py makes (owned by the pods' user, 65532).
STORE_URI = "file://" + os.environ.get("KUBELOOP_CLUSTER_STATE", "/var/lib/kubeloop-cluster") + "/store"
# The restricted pod security every pod of ours runs under (the e2e tests' pods too).
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Two iris flowers as a V2 request to the sample ModelDeployment.
IRIS_REQUEST = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
        }
    ]
}


def bin_dir() -> Path:
    out = subprocess.run(
        [str(REPO / "cluster" / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(REPO / ".kube" / "config")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    res = subprocess.run(
        [str(bin_dir() / "kubectl"), "--kubeconfig", kubeconfig(), *args],
        input=input,
        capture_output=True,
        text=True,
    )
    if check and res.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def build_images() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "cluster" / "build-images.sh"), "--import"], check=True, stdout=subprocess.PIPE, text=True
    )
    refs: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return refs


def install_operator(images: dict[str, str], store_uri: str = STORE_URI) -> None:
    """helm upgrade --install of the chart with these images; waits for the operator to be Ready."""
    repository, tag = images["operator"].rsplit(":", 1)
    subprocess.run(
        [
            str(bin_dir() / "helm"),
            "--kubeconfig",
            kubeconfig(),
            "upgrade",
            "--install",
            RELEASE,
            str(REPO / "helm" / "kubeloop"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "operator.imagePullPolicy=Never",
            "--set",
            f"operator.trainerImage={images['trainer']}",
            "--set",
            f"operator.serverImage={images['server']}",
            "--set",
            f"operator.storeURI={store_uri}",
        ],
        check=True,
    )


def conditions(kind: str, name: str, namespace: str) -> dict[str, dict[str, str]]:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if not out:
        return {}
    return {c["type"]: c for c in json.loads(out).get("status", {}).get("conditions", [])}


def wait_for_condition(
    kind: str, name: str, namespace: str, wanted: str, timeout: float, failed: str | None = None
) -> dict[str, dict[str, str]]:
    """Poll until condition `wanted` is True (or `failed` is True, or time runs out); print changes."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        conds = conditions(kind, name, namespace)
        summary = ", ".join(f"{t}={c['status']}({c.get('reason', '')})" for t, c in sorted(conds.items()))
        if summary != last:
            print(f"  {kind}/{name}: {summary or 'no status yet'}", flush=True)
            last = summary
        if conds.get(wanted, {}).get("status") == "True":
            return conds
        if failed and conds.get(failed, {}).get("status") == "True":
            raise SystemExit(f"{kind}/{name} failed: {conds[failed].get('message')}")
        time.sleep(2)
    raise SystemExit(f"{kind}/{name} did not become {wanted} within {timeout:.0f}s: {last}")


def predict_in_cluster(namespace: str, url: str, image: str, body: dict) -> str:  # type: ignore[type-arg]
    """POST a V2 request to the Service from a pod inside the cluster; returns the response body."""
    script = (
        "import sys, urllib.request; "
        f"req = urllib.request.Request({url!r}, data=sys.argv[1].encode(), "
        "headers={'Content-Type': 'application/json'}); "
        "print(urllib.request.urlopen(req, timeout=10).read().decode())"
    )
    overrides = {
        "spec": {
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script, json.dumps(body)],
                    "securityContext": RESTRICTED,
                }
            ]
        }
    }
    name = f"client-{int(time.time())}"
    kubectl(
        "run",
        name,
        "-n",
        namespace,
        "--image",
        image,
        "--restart=Never",
        "--overrides",
        json.dumps(overrides),
    )
    kubectl(
        "wait", f"pod/{name}", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"
    )
    out = kubectl("logs", name, "-n", namespace)
    kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
    return out.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespace", default="kubeloop-demo")
    args = parser.parse_args()
    ns = args.namespace
    t0 = time.monotonic()
    print("1. images (built when their inputs changed, imported into the node)", flush=True)
    images = build_images()
    print("2. the operator, installed with Helm", flush=True)
    install_operator(images)
    print(f"3. the samples, applied in namespace {ns}", flush=True)
    kubectl("create", "namespace", ns, check=False)
    kubectl("apply", "-n", ns, "-f", str(REPO / "manifests" / "samples"))
    print("4. the loop", flush=True)
    wait_for_condition("dataset", "iris", ns, "Ready", 300)
    wait_for_condition("trainingjob", "iris-logreg", ns, "Succeeded", 600, failed="Failed")
    wait_for_condition("modeldeployment", "iris", ns, "Ready", 300)
    url = json.loads(kubectl("get", "modeldeployment", "iris", "-n", ns, "-o", "json"))["status"]["url"]
    infer_url = url.rstrip("/") + "/v2/models/iris/infer"
    print(f"5. a prediction through the Service, from a pod: POST {infer_url}", flush=True)
    print("  ", predict_in_cluster(ns, infer_url, images["trainer"], IRIS_REQUEST), flush=True)
    print(kubectl("get", "kubeloop", "-n", ns))
    print(f"the loop ran in {time.monotonic() - t0:.0f}s; KUBECONFIG={kubeconfig()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
