"""The chart's two install modes grant exactly the verbs the operator uses, where it may use them.

Each mode is installed on the control-plane cluster (the operator's pod needs no node to be granted);
`kubectl auth can-i --list` as its ServiceAccount is compared with the lists below. In the namespaced mode
the operator, run in-process with a token of that ServiceAccount, reconciles in its watched namespace, never
refused, and leaves an object in another one alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from support.polling import wait_for
from support.serviceaccount import token_kubeconfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubeloop"
OPERATOR = ["run", "--standalone", "-m", "kubeloop.controllers.main"]

# What the operator may do in a namespace it acts in (both modes): kubectl's resource.group -> verbs.
NAMESPACED = {
    "datasets.kubeloop.io": {"list", "watch"},
    "modeldeployments.kubeloop.io": {"list", "watch"},
    "monitors.kubeloop.io": {"list", "watch"},
    "trainingjobs.kubeloop.io": {"list", "watch", "create"},
    "datasets.kubeloop.io/status": {"patch"},
    "trainingjobs.kubeloop.io/status": {"patch"},
    "modeldeployments.kubeloop.io/status": {"patch"},
    "monitors.kubeloop.io/status": {"patch"},
    "datasets.kubeloop.io/finalizers": {"update"},
    "trainingjobs.kubeloop.io/finalizers": {"update"},
    "modeldeployments.kubeloop.io/finalizers": {"update"},
    "jobs.batch": {"list", "watch", "create", "delete"},
    "deployments.apps": {"list", "watch", "create", "patch", "delete"},
    "poddisruptionbudgets.policy": {"list", "watch", "create", "patch", "delete"},
    "horizontalpodautoscalers.autoscaling": {"list", "watch", "create", "patch", "delete"},
    "networkpolicies.networking.k8s.io": {"list", "watch", "create", "patch"},
    "services": {"list", "watch", "create", "patch"},
    "endpointslices.discovery.k8s.io": {"list", "watch"},
    "pods": {"list", "watch"},
    "events": {"create"},
}
# Cluster-scoped reads of kopf's observers: CRDs in both modes, namespaces in the namespaced mode only.
CRDS = {"customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"}}
NAMESPACES = {"namespaces": {"list", "watch"}}


def granted(kubectl: Any, user: str, namespace: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as user in namespace: resource -> verbs (resource rows only)."""
    out = kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    rows: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        resource, _, verbs = line.partition("[")
        verbs = verbs.rsplit("[", 1)[-1]
        name = resource.split()[0] if resource.split() else ""
        if name:
            rows.setdefault(name, set()).update(verbs.strip().rstrip("]").split())
    return rows


def beyond_everyone(kubectl: Any, sa: str, namespace: str, install_ns: str) -> dict[str, set[str]]:
    """What the chart's ServiceAccount may do beyond a ServiceAccount with no binding (the built-in
    discovery and self-review rules every account has)."""
    everyone = granted(kubectl, f"system:serviceaccount:{install_ns}:nobody", namespace)
    mine = granted(kubectl, f"system:serviceaccount:{install_ns}:{sa}", namespace)
    extra = {r: v - everyone.get(r, set()) for r, v in mine.items()}
    return {r: v for r, v in extra.items() if v}


@pytest.fixture
def other_namespaces(kubectl: Any) -> Iterator[tuple[str, str]]:
    """A namespace to watch and one not to, made for one test."""
    suffix = uuid.uuid4().hex[:6]
    made = (f"t-watched-{suffix}", f"t-unwatched-{suffix}")
    for name in made:
        kubectl("create", "namespace", name)
    yield made
    for name in made:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def install(helm: Any, namespace: str, *values: str) -> str:
    release = f"kl-rbac-{uuid.uuid4().hex[:6]}"  # ClusterRoles are cluster-wide: a name of its own
    helm("install", release, str(CHART), "-n", namespace, "--skip-crds", *values)
    return release


def test_cluster_wide_mode_grants_the_used_verbs_in_every_namespace(
    helm: Any, kubectl: Any, namespace: str
) -> None:
    release = install(helm, namespace)
    try:
        sa = f"{release}-kubeloop"
        for where in (namespace, "default", "kube-system"):
            assert beyond_everyone(kubectl, sa, where, namespace) == NAMESPACED | CRDS, where
    finally:
        helm("uninstall", release, "-n", namespace, check=False)


def test_namespaced_mode_grants_them_in_the_watched_namespaces_only(
    helm: Any, kubectl: Any, namespace: str, other_namespaces: tuple[str, str]
) -> None:
    watched, unwatched = other_namespaces
    release = install(helm, namespace, "--set", f"watchNamespaces={{{watched}}}")
    try:
        sa = f"{release}-kubeloop"
        assert beyond_everyone(kubectl, sa, watched, namespace) == NAMESPACED | CRDS | NAMESPACES
        for where in (unwatched, namespace, "kube-system"):
            assert beyond_everyone(kubectl, sa, where, namespace) == CRDS | NAMESPACES, where
    finally:
        helm("uninstall", release, "-n", namespace, check=False)


def handled(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The namespaces of the TrainingJobs this in-process operator reconciled (kopf's per-object logs;
    the shared cluster may run another operator that writes their status too)."""
    refs = [getattr(r, "k8s_ref", {}) for r in caplog.records if "reconcile_trainingjob" in r.getMessage()]
    return {ref["namespace"] for ref in refs if ref.get("kind") == "TrainingJob"}


def test_namespaced_operator_acts_in_its_namespace_alone_with_the_charts_rbac(
    helm: Any,
    kubectl: Any,
    namespace: str,
    other_namespaces: tuple[str, str],
    start_operator: Callable[[], AbstractContextManager[Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watched, unwatched = other_namespaces
    release = install(helm, namespace, "--set", f"watchNamespaces={{{watched}}}")
    try:
        config = token_kubeconfig(kubectl, f"{release}-kubeloop", namespace, tmp_path / "sa-kubeconfig")
        start_operator()  # its environment (resync, metrics off, store), then this ServiceAccount's config
        monkeypatch.setenv("KUBECONFIG", str(config))
        # kopf logs in through the client library, whose default kubeconfig was fixed at its import.
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(config))
        job = {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "orphan"},
            "spec": {"datasetRef": {"name": "missing"}, "model": {"estimator": "LogisticRegression"}},
        }
        for where in (watched, unwatched):
            kubectl("apply", "-n", where, "-f", "-", input=yaml.safe_dump(job))
        with KopfRunner([*OPERATOR, f"--namespace={watched}"], timeout=60) as runner:
            wait_for(lambda: handled(caplog), what="the watched TrainingJob reconciled")
            time.sleep(3)  # the unwatched one would have come in the same initial listing
        assert handled(caplog) == {watched}
        assert runner.exception is None, f"the operator crashed: {runner.exception!r}"
        # A verb the chart lacks: a refused status write, or kopf's warnings on its watches.
        denied = ("Forbidden", "refused", "Not enough permissions")
        assert not any(word in caplog.text for word in denied), caplog.text[-3000:]
    finally:
        helm("uninstall", release, "-n", namespace, check=False)
