"""Fixtures shared by every test: a real Kubernetes for integration and end-to-end tests.

- Unit tests (tests/unit) need nothing.
- `kubeconfig` gives a running cluster with the CRDs applied. It reuses the cluster that $KUBECONFIG
  points at when it answers (a kind cluster, or one left running with `make cluster-up`); otherwise it
  starts the local cluster (cluster/localcluster.py), control plane only until a test asks for `node`.
- `node` makes sure the cluster also has a node that runs containers; `images` builds the project's
  images (only when their inputs changed) and imports them into the local node.
- A cluster this test run started is torn down at the end by tests/e2e/test_zz_teardown.py, which checks
  that nothing it made is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import DEFAULT_KUBECONFIG, LOCALCLUSTER, REPO, STATE, binary, facts, kubectl_binary

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first, then integration, then e2e, and the teardown check last of all."""

    def rank(item: pytest.Item) -> int:
        path = str(item.path)
        if "test_zz_teardown" in path:
            return 3
        if item.get_closest_marker("e2e") or "/e2e/" in path:
            return 2
        if item.get_closest_marker("integration") or "/integration/" in path:
            return 1
        return 0

    items.sort(key=rank)  # stable: keeps file order within a rank
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


def cluster_answers(kubeconfig: Path) -> bool:
    if not kubeconfig.exists():
        return False
    res = subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "--raw",
            "/readyz",
            "--request-timeout=5s",
        ],
        capture_output=True,
        text=True,
    )
    return res.returncode == 0 and res.stdout.strip() == "ok"


def node_ready(kubeconfig: Path) -> bool:
    res = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        return False
    for node in json.loads(res.stdout)["items"]:
        for cond in node["status"].get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                return True
    return False


def start_local_cluster(control_plane_only: bool) -> None:
    if STATE.kubeconfig != DEFAULT_KUBECONFIG:
        pytest.fail(
            f"KUBECONFIG={STATE.kubeconfig} does not answer; start that cluster, or unset KUBECONFIG "
            "to let the tests start the local one"
        )
    if STATE.before is None and not cluster_answers(STATE.kubeconfig) and not facts()["processes"]:
        # No cluster runs: what one that died (a killed session, a reboot) left behind goes first, so
        # that the teardown test compares against a clean host. A cluster still starting is left alone.
        subprocess.run([*LOCALCLUSTER, "down"], check=True)
        STATE.before = facts()
        STATE.started_by_tests = True
    args = ["up", "--control-plane-only"] if control_plane_only else ["up"]
    subprocess.run([*LOCALCLUSTER, *args], check=True)


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """A running cluster (reused or started) with the project's CRDs applied."""
    if not cluster_answers(STATE.kubeconfig):
        start_local_cluster(control_plane_only=True)
    crds = REPO / "crds"
    if crds.is_dir() and any(crds.glob("*.yaml")):
        run_kubectl(STATE.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crds))
        run_kubectl(
            STATE.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=kubeloop",
            check=False,
        )
    return STATE.kubeconfig


@pytest.fixture(scope="session")
def node(kubeconfig: Path) -> Path:
    """The cluster also runs containers: a Ready node (the local one is added if missing)."""
    if not node_ready(kubeconfig):
        start_local_cluster(control_plane_only=False)
    return kubeconfig


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """kubectl(*args, input=None, check=True) -> CompletedProcess, the real kubectl on the test cluster."""

    def _kubectl(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(kubeconfig, *args, input=input, check=check, timeout=timeout)

    return _kubectl


@pytest.fixture(scope="session")
def k8s_client(kubeconfig: Path) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def helm(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """helm(*args, check=True) -> CompletedProcess, the real Helm on the test cluster."""

    def _helm(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [binary("helm"), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    return _helm


@pytest.fixture(scope="session")
def images(node: Path) -> dict[str, str]:
    """The project's images (operator, trainer, server), built when their inputs changed, on the node.

    KUBELOOP_IMAGES (a JSON map target -> reference) names images already on the cluster's nodes
    instead (kind: `make kind-images`)."""
    if os.environ.get("KUBELOOP_IMAGES"):
        given: dict[str, str] = json.loads(os.environ["KUBELOOP_IMAGES"])
        return given
    res = subprocess.run(
        [str(REPO / "cluster" / "build-images.sh"), "--import"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECONFIG": str(node)},
    )
    refs: dict[str, str] = json.loads(res.stdout.strip().splitlines()[-1])
    return refs
