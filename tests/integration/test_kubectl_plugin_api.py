"""`kubectl kubeloop` against a real API server: found by kubectl on PATH, reading the four kinds' status
(written through the status subresource, as the operator writes it) and annotating a canary. No operator
runs: the status is the test's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop.controllers.canary import manual
from support.kubectl_plugin import plugin
from support.lineage_chain import CANARY_SHA, DATA_VERSION, SERVING_SHA, chain

Kubectl = Any


@pytest.fixture
def no_operator(kubectl: Kubectl) -> None:
    """An operator installed by an e2e run on a reused cluster reconciles every namespace and rewrites the
    status these tests write (make test runs them before it installs one)."""
    selector = "app.kubernetes.io/name=kubeloop,app.kubernetes.io/component=operator"
    found = kubectl("get", "deployments", "-A", "-l", selector, "-o", "name").stdout.split()
    if found:
        pytest.skip(f"the operator runs on this cluster ({', '.join(found)}) and would rewrite the status")


@pytest.fixture
def loop(kubectl: Kubectl, namespace: str, no_operator: None) -> str:
    """The loop of support.lineage_chain in the namespace, status written through /status."""
    for obj, status in chain(namespace):
        manifest = {"apiVersion": "kubeloop.io/v1alpha1", **obj}
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        kubectl(
            "patch", obj["kind"].lower(), obj["metadata"]["name"], "-n", namespace,
            "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip
    return namespace


def test_lineage_from_each_kind_shows_the_whole_chain(kubeconfig: Path, loop: str) -> None:
    outputs = {}
    for ref in ("dset/iris", "trainingjob/iris-lr", "modeldeployment/iris", "kmon/iris-watch"):
        done = plugin("lineage", ref, "-n", loop, kubeconfig=kubeconfig)
        assert done.returncode == 0, done.stderr
        outputs[ref] = done.stdout
    text = outputs["modeldeployment/iris"]
    lines = text.splitlines()
    assert lines[0].startswith(f"Dataset/iris  Ready=True  version {DATA_VERSION}  150 rows x 5 columns")
    for expected in (
        "├── TrainingJob/iris-lr  Succeeded=True  GatePassed=True  accuracy=0.967",
        f"│   └── Model sha256:{SERVING_SHA[:12]}  classification  dataset version {DATA_VERSION}",
        "│       └── ModelDeployment/iris  serving  Ready=True",
        f"canary sha256:{CANARY_SHA[:12]} Analysing: step 1/2, weight 20%, 18.5% of requests",
        "└── Monitor/iris-watch  Ready=True  Drifted=True (DriftDetected)  SLOViolated=False",
        "feature petal_length fail: psi 0.41 (600 samples)",
        "-> TrainingJob/iris-watch-retrain-1",
        "└── TrainingJob/iris-watch-retrain-1",
        "└── ModelDeployment/iris  canary 20%",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert outputs["kmon/iris-watch"] == text == outputs["dset/iris"]
    # From the first run: its own branch, without the retrain's.
    assert "TrainingJob/iris-watch-retrain-1  Succeeded" not in outputs["trainingjob/iris-lr"]
    assert "Monitor/iris-watch" in outputs["trainingjob/iris-lr"]


def test_the_kubeconfig_is_found_like_kubectl_finds_it(kubeconfig: Path, loop: str, tmp_path: Path) -> None:
    # $KUBECONFIG alone, and a context whose namespace is the loop's: no --kubeconfig, no -n.
    config = yaml.safe_load(kubeconfig.read_text())
    context = dict(config["contexts"][0])
    context = {"name": "plugin-test", "context": {**context["context"], "namespace": loop}}
    config["contexts"].append(context)
    other = tmp_path / "config"
    other.write_text(yaml.safe_dump(config))
    done = plugin("report", "iris-lr", "--context", "plugin-test", env={"KUBECONFIG": str(other)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"TrainingJob {loop}/iris-lr"
    assert "  accuracy  0.967  >= 0.85" in done.stdout
    assert f"  sha256:     {SERVING_SHA}" in done.stdout
    # The current context (namespace default) does not hold it: the error names where it looked.
    done = plugin("report", "iris-lr", env={"KUBECONFIG": str(other)})
    assert done.returncode == 1 and "trainingjob 'iris-lr' in namespace 'default' not found" in done.stderr
    done = plugin("report", "iris-lr", "--context", "nope", env={"KUBECONFIG": str(other)})
    assert done.returncode == 1 and "cannot load the kubeconfig" in done.stderr, done.stderr


def annotations(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    md = json.loads(kubectl("get", "modeldeployment", "iris", "-n", namespace, "-o", "json").stdout)
    return dict(md["metadata"].get("annotations") or {})


def test_promote_and_abort_name_the_running_canary_as_the_operator_reads_it(
    kubeconfig: Path, kubectl: Kubectl, loop: str
) -> None:
    done = plugin("promote", "iris", "-n", loop, kubeconfig=kubeconfig)
    assert done.returncode == 0, done.stderr
    assert (
        f"promotion of canary sha256:{CANARY_SHA[:12]} requested (step 1, weight 20%, Analysing)"
        in done.stdout
    )
    found = annotations(kubectl, loop)
    assert found["kubeloop.io/promote"] == CANARY_SHA
    assert manual(found, CANARY_SHA) == "promote"  # what the operator's canary step will do with it
    assert manual(found, SERVING_SHA) is None  # and it never acts on another canary

    done = plugin("abort", "mdep/iris", "-n", loop, kubeconfig=kubeconfig)
    assert done.returncode == 0, done.stderr
    found = annotations(kubectl, loop)
    assert found["kubeloop.io/abort"] == CANARY_SHA
    assert manual(found, CANARY_SHA) == "abort"  # abort wins over an earlier promote


def test_clear_errors_exit_1(kubeconfig: Path, kubectl: Kubectl, loop: str, tmp_path: Path) -> None:
    no_canary = json.dumps({"status": {"canary": None, "wantedSha256": None}})
    kubectl(
        "patch",
        "modeldeployment",
        "iris",
        "-n",
        loop,
        "--subresource=status",
        "--type=merge",
        "-p",
        no_canary,
    )
    for order in ("promote", "abort"):
        done = plugin(order, "iris", "-n", loop, kubeconfig=kubeconfig)
        assert done.returncode == 1, done
        assert done.stderr.strip() == f"error: modeldeployment 'iris' runs no canary: nothing to {order}"
    assert "kubeloop.io/promote" not in annotations(kubectl, loop)

    done = plugin("lineage", "mdep/nope", "-n", loop, kubeconfig=kubeconfig)
    assert (done.returncode, done.stderr.strip()) == (
        1,
        f"error: modeldeployment 'nope' in namespace '{loop}' not found",
    )
    done = plugin("lineage", "pod/x", "-n", loop, kubeconfig=kubeconfig)
    assert done.returncode == 1 and "unknown kind 'pod'" in done.stderr
    done = plugin("predict", "iris", "-f", str(tmp_path / "rows.txt"), "-n", loop, kubeconfig=kubeconfig)
    assert done.returncode == 1 and "cannot tell the format from the name" in done.stderr
    done = plugin("predict", "iris", "-f", str(tmp_path / "missing.csv"), "-n", loop, kubeconfig=kubeconfig)
    assert done.returncode == 1 and "cannot read" in done.stderr and "missing.csv" in done.stderr
