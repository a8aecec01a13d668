"""Install, upgrade and GitOps as a platform team does them, on the samples on a real node.

- The samples applied with server-side apply show no diff once the operator reconciled them, a second
  apply writes nothing, and the operator owns only their status (managedFields; no annotation, no finalizer).
- `helm upgrade` to changed values rolls the operator's pod and re-runs nothing: the same Jobs, the same
  digests in status, the same serving pod.
- `helm uninstall` keeps the CRDs and the objects (the model keeps serving); `helm install` takes them over
  without re-running them, and acts on what changed meanwhile.

The module ends with the operator installed as the session's fixture installed it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.e2e import Kubectl, apply, demo, get, items, training_job, wait_condition, wait_for

Helm = Callable[..., subprocess.CompletedProcess[str]]
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
OBJECTS = (
    ("dataset", "iris"),
    ("trainingjob", "iris-logreg"),
    ("modeldeployment", "iris"),
    ("monitor", "iris"),
)
APPLIER = "kubectl"  # kubectl apply --server-side's field manager: the GitOps repository's
OPERATOR_MANAGER = "kubeloop"  # kubeloop.controllers.kube.FIELD_MANAGER
OPERATOR = (
    f"app.kubernetes.io/name=kubeloop,app.kubernetes.io/instance={demo.RELEASE},"
    "app.kubernetes.io/component=operator"
)
CRDS = ("datasets", "trainingjobs", "modeldeployments", "monitors")


def server_side_apply(kubectl: Kubectl, namespace: str, *args: str, input: str | None = None) -> None:
    kubectl("apply", "--server-side", f"--field-manager={APPLIER}", "-n", namespace, *args, input=input)


def server_side_diff(kubectl: Kubectl, namespace: str) -> subprocess.CompletedProcess[str]:
    """kubectl diff --server-side of the samples: exit code 0 and no output when nothing would change."""
    return kubectl(
        "diff",
        "--server-side",
        f"--field-manager={APPLIER}",
        "-n",
        namespace,
        "-f",
        str(SAMPLES),
        check=False,
    )


@pytest.fixture(scope="module")
def samples(kubectl: Kubectl, operator_installed: dict[str, str]) -> Iterator[str]:
    """The four samples, applied server-side in a namespace of this module, each reconciled to its end."""
    namespace = f"t-install-upgrade-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        server_side_apply(kubectl, namespace, "-f", str(SAMPLES))
        wait_condition(kubectl, "dataset", "iris", namespace, "Ready", timeout=300)
        wait_condition(
            kubectl,
            "trainingjob",
            "iris-logreg",
            namespace,
            "Succeeded",
            timeout=600,
            unless=("Failed", "True"),
        )
        wait_condition(kubectl, "modeldeployment", "iris", namespace, "Ready", timeout=300)
        wait_for(
            lambda: get(kubectl, "monitor", "iris", namespace).get("status", {}).get("lastCheckTime"),
            180,
            "the Monitor's first check",
        )
        yield namespace
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def facts(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """What a user would see change if the operator re-ran or replaced something."""
    objects = {f"{kind}/{name}": get(kubectl, kind, name, namespace) for kind, name in OBJECTS}
    dataset, job, served = (
        objects[k]["status"] for k in ("dataset/iris", "trainingjob/iris-logreg", "modeldeployment/iris")
    )
    return {
        "uids": {key: obj["metadata"]["uid"] for key, obj in objects.items()},
        "jobs": {j["metadata"]["name"]: j["metadata"]["uid"] for j in items(kubectl, "jobs", namespace)},
        "datasetVersion": dataset["version"],
        "datasetHistory": dataset.get("history"),
        "model": job["model"]["sha256"],
        "trials": job["trials"],
        "trainedAt": job.get("completionTime"),
        "servedModel": served["model"]["sha256"],
        "serverPods": {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in items(kubectl, "pods", namespace, "kubeloop.io/modeldeployment=iris")
        },
        "deployments": {
            d["metadata"]["name"]: d["metadata"]["generation"]
            for d in items(kubectl, "deployments", namespace)
        },
    }


def operator_pod(kubectl: Kubectl) -> dict[str, Any]:
    pods = [
        p
        for p in items(kubectl, "pods", demo.RELEASE_NAMESPACE, OPERATOR)
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def train_after(kubectl: Kubectl, namespace: str, name: str) -> None:
    """A new TrainingJob on the sample Dataset, trained to its end: the operator now running has the
    Dataset, read from the API server since it started, and reconciles."""
    apply(kubectl, namespace, training_job(name, "LogisticRegression", {"max_iter": 300}))
    wait_condition(
        kubectl, "trainingjob", name, namespace, "Succeeded", timeout=300, unless=("Failed", "True")
    )


def assert_nothing_rerun(before: dict[str, Any], after: dict[str, Any], new_jobs_of: str = "") -> None:
    """Only the TrainingJob `new_jobs_of` (if any) has new Jobs; every earlier Job and status fact stays."""
    new = after["jobs"].keys() - before["jobs"].keys()
    new = {name for name in new if not (new_jobs_of and name.startswith(new_jobs_of))}
    assert not new, f"Jobs made again for objects that were done: {sorted(new)}"
    kept = {name: after["jobs"].get(name) for name in before["jobs"]}
    assert kept == before["jobs"], "a Job of a done object was deleted or replaced"
    for key in ("uids", "datasetVersion", "datasetHistory", "model", "trials", "trainedAt", "servedModel"):
        assert after[key] == before[key], f"{key} changed: {before[key]} -> {after[key]}"


def test_the_samples_applied_again_show_no_diff_and_the_operator_owns_only_their_status(
    kubectl: Kubectl, samples: str
) -> None:
    diff = server_side_diff(kubectl, samples)
    assert diff.returncode == 0 and diff.stdout == "", f"drift after reconcile:\n{diff.stdout}{diff.stderr}"

    versions = {f"{k}/{n}": get(kubectl, k, n, samples)["metadata"]["resourceVersion"] for k, n in OBJECTS}
    server_side_apply(kubectl, samples, "-f", str(SAMPLES))
    again = {f"{k}/{n}": get(kubectl, k, n, samples)["metadata"]["resourceVersion"] for k, n in OBJECTS}
    # The Monitor's checks write its status every interval; a no-op apply writes nothing at all.
    changed = {key for key in versions if again[key] != versions[key] and not key.startswith("monitor/")}
    assert not changed, f"applying the same samples again wrote {sorted(changed)}"
    assert server_side_diff(kubectl, samples).stdout == ""

    for kind, name in OBJECTS:
        found = kubectl("get", kind, name, "-n", samples, "-o", "json", "--show-managed-fields")
        meta = json.loads(found.stdout)["metadata"]
        assert not meta.get("finalizers"), f"{kind}/{name} has finalizers: {meta['finalizers']}"
        assert not meta.get("annotations"), (
            f"{kind}/{name} has annotations the repository lacks: {meta['annotations']}"
        )
        owners = {(f["manager"], f["operation"], f.get("subresource", "")) for f in meta["managedFields"]}
        assert owners == {(APPLIER, "Apply", ""), (OPERATOR_MANAGER, "Update", "status")}, (
            f"{kind}/{name}: fields owned by {sorted(owners)}"
        )
        operator_fields = next(f for f in meta["managedFields"] if f["manager"] == OPERATOR_MANAGER)[
            "fieldsV1"
        ]
        assert set(operator_fields) == {"f:status"}, (
            f"{kind}/{name}: the operator owns {sorted(operator_fields)}"
        )


def test_helm_upgrade_to_changed_values_rolls_the_operator_and_reruns_nothing(
    kubectl: Kubectl, samples: str, operator_installed: dict[str, str]
) -> None:
    before = facts(kubectl, samples)
    old_pod = operator_pod(kubectl)
    try:
        demo.install_operator(
            operator_installed, values=("operator.verbose=true", "resources.requests.cpu=60m")
        )
        new_pod = operator_pod(kubectl)
        assert new_pod["metadata"]["uid"] != old_pod["metadata"]["uid"], "the operator's pod was not rolled"
        container = new_pod["spec"]["containers"][0]
        assert container.get("args") == ["--verbose"] and container["resources"]["requests"]["cpu"] == "60m"

        train_after(kubectl, samples, "after-upgrade")
        wait_condition(kubectl, "modeldeployment", "iris", samples, "Ready", timeout=60)
        assert_nothing_rerun(before, facts(kubectl, samples), new_jobs_of="after-upgrade")
        after = facts(kubectl, samples)
        assert after["serverPods"] == before["serverPods"], "a serving pod was replaced by the upgrade"
        assert after["deployments"] == before["deployments"], "the serving Deployment was changed"
        assert server_side_diff(kubectl, samples).stdout == ""
    finally:
        demo.install_operator(operator_installed)


def test_helm_uninstall_keeps_crds_and_objects_and_a_new_install_takes_them_over(
    kubectl: Kubectl, helm: Helm, samples: str, operator_installed: dict[str, str]
) -> None:
    before = facts(kubectl, samples)
    try:
        out = helm("uninstall", demo.RELEASE, "-n", demo.RELEASE_NAMESPACE, "--wait", "--timeout", "3m")
        assert f'release "{demo.RELEASE}" uninstalled' in out.stdout, out.stdout
        # --wait returns once the Deployment is gone; its pod terminates after it.
        wait_for(
            lambda: items(kubectl, "pods", demo.RELEASE_NAMESPACE, OPERATOR) == [],
            120,
            "the operator's pod to go",
        )
        for plural in CRDS:
            kubectl("get", "crd", f"{plural}.kubeloop.io")
        assert_nothing_rerun(before, facts(kubectl, samples))
        served = get(kubectl, "modeldeployment", "iris", samples)["status"]
        url = served["url"].rstrip("/") + "/v2/models/iris/infer"
        answer = json.loads(
            demo.predict_in_cluster(samples, url, operator_installed["trainer"], demo.IRIS_REQUEST)
        )
        assert answer["model_version"] and len(answer["outputs"][0]["data"]) == 2, answer

        # What the repository says meanwhile waits for the next operator: two replicas instead of one.
        scaled = (SAMPLES / "03-modeldeployment-iris.yaml").read_text().replace("replicas: 1", "replicas: 2")
        server_side_apply(kubectl, samples, "-f", "-", input=scaled)
    finally:
        demo.install_operator(operator_installed)

    train_after(kubectl, samples, "after-reinstall")
    wait_for(
        lambda: get(kubectl, "modeldeployment", "iris", samples)["status"].get("readyReplicas") == 2,
        240,
        "the ModelDeployment, taken over, to serve with two replicas",
    )
    after = facts(kubectl, samples)
    assert_nothing_rerun(before, after, new_jobs_of="after-reinstall")
    assert before["serverPods"].items() <= after["serverPods"].items(), "the serving pod was replaced"
    assert len(after["serverPods"]) == 2
