"""NetworkPolicy enforced for real (kube-router's firewall beside the bridge CNI and kube-proxy): a client in
a namespace the ModelDeployment allows gets a prediction through its Service, one in any other namespace
cannot open a connection."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from support.e2e import (
    Kubectl,
    Obj,
    apply,
    demo,
    get,
    iris_dataset,
    pod_output,
    start_pod,
    status,
    training_job,
    wait_condition,
)

# POSTs a V2 request through the Service up to ATTEMPTS times, 4 s each, stopping at the first answer;
# prints every attempt as JSON (the answer's outputs, or the error: a timeout or a refused connection).
CLIENT = """
import json, sys, time, urllib.request
url, body, attempts = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
tried = []
for _ in range(attempts):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=4) as answer:
            tried.append({"status": answer.status, "outputs": json.loads(answer.read())["outputs"]})
            break
    except Exception as error:
        tried.append({"error": type(error).__name__ + ": " + str(error)[:120]})
        time.sleep(1)
print(json.dumps(tried))
"""


@pytest.fixture
def client_namespaces(kubectl: Kubectl) -> Iterator[tuple[str, str, str]]:
    """Two namespaces for clients, one labelled as the ModelDeployment allows; and that label's value."""
    tag = uuid.uuid4().hex[:6]
    allowed, denied = f"t-netpol-allowed-{tag}", f"t-netpol-denied-{tag}"
    for name in (allowed, denied):
        kubectl("create", "namespace", name)
    kubectl("label", "namespace", allowed, f"kubeloop-test/clients={tag}")
    try:
        yield allowed, denied, tag
    finally:
        for name in (allowed, denied):
            kubectl("delete", "namespace", name, "--wait=false", check=False)


def ask(kubectl: Kubectl, namespace: str, image: str, url: str, attempts: int) -> list[Obj]:
    command = ["python3", "-c", CLIENT, url, json.dumps(demo.IRIS_REQUEST), str(attempts)]
    start_pod(kubectl, namespace, "client", image, command)
    out = pod_output(kubectl, namespace, "client", timeout=180)
    tried: list[Obj] = json.loads(out.strip().splitlines()[-1])
    return tried


def test_only_allowed_namespaces_reach_the_inference_service(
    kubectl: Kubectl,
    namespace: str,
    client_namespaces: tuple[str, str, str],
    operator_installed: dict[str, str],
) -> None:
    allowed, denied, tag = client_namespaces
    apply(kubectl, namespace, iris_dataset(), training_job("lr", "LogisticRegression", {"max_iter": 300}))
    wait_condition(
        kubectl, "trainingjob", "lr", namespace, "Succeeded", timeout=400, unless=("Failed", "True")
    )
    deployment = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"trainingJobRef": {"name": "lr"}},
            "replicas": 1,
            "network": {
                "allowFrom": [{"namespaceSelector": {"matchLabels": {"kubeloop-test/clients": tag}}}]
            },
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        },
    }
    apply(kubectl, namespace, deployment)
    wait_condition(
        kubectl, "modeldeployment", "iris", namespace, "Ready", timeout=240, unless=("Degraded", "True")
    )
    policy = get(kubectl, "networkpolicy", "iris", namespace)
    assert [o["kind"] for o in policy["metadata"]["ownerReferences"]] == ["ModelDeployment"], policy
    url = status(kubectl, "modeldeployment", "iris", namespace)["url"].rstrip("/") + "/v2/models/iris/infer"
    image = operator_installed["trainer"]

    # Allowed: a prediction (a few tries: a client pod's address joins the enforcer's sets as it starts).
    served = ask(kubectl, allowed, image, url, attempts=15)
    print("allowed namespace:", served)
    assert served[-1].get("status") == 200, served
    assert served[-1]["outputs"][0]["data"], served

    # Denied: every try fails to connect (dropped: a timeout; rejected: refused), none is answered.
    refused = ask(kubectl, denied, image, url, attempts=3)
    print("denied namespace:", refused)
    assert len(refused) == 3 and all("error" in t for t in refused), refused
    assert all(("timed out" in t["error"]) or ("refused" in t["error"]) for t in refused), refused

    # The ModelDeployment's own namespace is not in allowFrom either: allowFrom replaces the default.
    own = ask(kubectl, namespace, image, url, attempts=2)
    assert all("error" in t for t in own), own
