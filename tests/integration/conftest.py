"""The operator, run in-process against the real cluster (kopf's KopfRunner), with the chart's RBAC: its
ServiceAccount, ClusterRole and binding are applied and the operator logs in with a token of that account,
so a permission the chart lacks fails a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from support.polling import wait_for  # noqa: F401 - re-exported for the tests
from support.serviceaccount import token_kubeconfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubeloop"
# The chart's RBAC alone (no Deployment: a second operator would race the one under test).
RBAC_TEMPLATES = ("serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml")
RBAC_RELEASE, RBAC_NAMESPACE = "kubeloop-it", "kubeloop-it"

OPERATOR_ARGS = ["run", "-A", "--standalone", "-m", "kubeloop.controllers.main"]


@pytest.fixture(scope="session")
def operator_kubeconfig(helm: Any, kubectl: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's RBAC applied (cluster-wide mode), and a kubeconfig with its ServiceAccount's token."""
    shown = [arg for name in RBAC_TEMPLATES for arg in ("--show-only", f"templates/{name}")]
    manifests = helm(
        "template", RBAC_RELEASE, str(CHART), "-n", RBAC_NAMESPACE, "--kube-version", "1.34.0", *shown
    ).stdout
    if kubectl("get", "namespace", RBAC_NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", RBAC_NAMESPACE)
    kubectl("apply", "--server-side", "--force-conflicts", "-n", RBAC_NAMESPACE, "-f", "-", input=manifests)
    account = next(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(manifests)
        if doc and doc["kind"] == "ServiceAccount"
    )
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return token_kubeconfig(kubectl, account, RBAC_NAMESPACE, path)


@pytest.fixture
def start_operator(
    operator_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of operator runs (a test may stop and start the operator); each is a context manager.
    The operator uses the chart's ServiceAccount; kubectl in the tests stays admin."""
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    # kopf logs in through the client library, whose default kubeconfig was fixed at its import.
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(operator_kubeconfig)
    )
    # Reconciles are event-driven: a safety resync this long never fires during a test, so none can pass
    # thanks to it.
    monkeypatch.setenv("KUBELOOP_RESYNC_SECONDS", "3600")
    monkeypatch.setenv("KUBELOOP_METRICS_PORT", "0")
    monkeypatch.setenv("KUBELOOP_STORE_URI", "s3://kubeloop-test/store")
    return lambda: KopfRunner(OPERATOR_ARGS, timeout=60)


@pytest.fixture
def operator(start_operator: Callable[[], AbstractContextManager[Any]]) -> Iterator[Any]:
    with start_operator() as runner:
        yield runner
    assert runner.exception is None, f"the operator crashed: {runner.exception!r}"
    assert runner.exit_code == 0, runner.output[-3000:]
