"""The chart refuses a wrong value before anything is installed, naming it, and its notes say what next.

The value tests need the Helm binary only (no cluster); the notes are rendered by a server-side dry run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop.api import KINDS
from support.cluster import binary

CHART = Path(__file__).resolve().parents[2] / "helm" / "kubeloop"
# The chart's kubeVersion rules out Helm's offline default (1.20).
TEMPLATE = ["template", "kubeloop", str(CHART), "--kube-version", "1.34.0"]

# (--set argument, words the error must contain: where the value is and what is wrong with it)
WRONG = [
    ("metrics.port=70000", ["/metrics/port", "65,535"]),
    ("image.pullPolicy=Sometimes", ["/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"]),
    ("operator.colour=red", ["/operator", "'colour' not allowed"]),
    ("operator.storeURI=http://bucket/store", ["/operator/storeURI", "'http://bucket/store'"]),
    ("operator.resyncSeconds=0", ["/operator/resyncSeconds", "minimum"]),
    ("resources.requests.cpu=lots", ["/resources/requests/cpu", "'lots'"]),
    ("tolerations[0].effect=NoWay", ["/tolerations/0/effect", "NoSchedule"]),
    ("serviceAccount.name=My_Account", ["/serviceAccount/name", "'My_Account'"]),
    ("monitoring.rules.enabled=yes", ["/monitoring/rules/enabled", "boolean"]),
    ("monitoring.dashboard.namespace=Grafana", ["/monitoring/dashboard/namespace", "'Grafana'"]),
    ("watchNamespaces={Team_A}", ["/watchNamespaces/0", "'Team_A'"]),
    ("operator.allowedTrainingImages={/abs}", ["/operator/allowedTrainingImages/0", "'/abs'"]),
]

# Every knob set to a valid value other than its default: a schema too strict to take them fails here.
GOOD: dict[str, Any] = {
    "image": {
        "repository": "registry.local:5000/kubeloop/operator",
        "tag": "v0.1.0-rc.1",
        "pullPolicy": "Always",
    },
    "operator": {
        "trainerImage": "registry.local:5000/kubeloop/trainer@sha256:" + "a" * 64,
        "serverImage": "registry.local:5000/kubeloop/server:0.1.0",
        "storeURI": "s3://models/kubeloop",
        "storeSecret": "store-credentials",
        "allowedEstimators": ["LogisticRegression", "RandomForestClassifier"],
        "allowedTrainingImages": ["registry.local:5000/team-a/", "registry.local:5000/shared/trainer"],
        "resyncSeconds": 120.5,
        "successfulJobsHistoryLimit": 0,
        "failedJobsHistoryLimit": 5,
        "verbose": True,
    },
    "metrics": {"port": 9100, "service": False},
    "watchNamespaces": ["team-a", "team-b"],
    "rbac": {"create": False},
    "serviceAccount": {"create": False, "name": "kubeloop-operator"},
    "resources": {
        "requests": {"cpu": 0.5, "memory": "256Mi"},
        "limits": {"memory": "1Gi", "nvidia.com/gpu": 1},
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "networkPolicy": {
        "enabled": True,
        "metricsScraper": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["prometheus"]}]}
        },
    },
    "monitoring": {
        "labels": {"release": "prometheus"},
        "interval": "30s",
        "rules": {"enabled": True},
        "podMonitor": {"enabled": True},
        "dashboard": {"enabled": True, "namespace": "grafana", "labels": {"grafana_dashboard": "1"}},
    },
}


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("helm"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["template", "lint"])
@pytest.mark.parametrize(("value", "words"), WRONG, ids=[v for v, _ in WRONG])
def test_a_wrong_value_is_refused_naming_it(command: str, value: str, words: list[str]) -> None:
    args = [*TEMPLATE] if command == "template" else ["lint", str(CHART)]
    res = run_helm(*args, "--set", value)
    output = res.stdout + res.stderr
    assert res.returncode != 0, f"helm {command} took {value}"
    for word in words:
        assert word in output, f"helm {command} --set {value}: {word!r} not in\n{output}"


def test_metrics_on_the_health_port_is_refused() -> None:
    """A rule across values, so a template's `fail`: install and template stop on it (lint only logs it)."""
    res = run_helm(*TEMPLATE, "--set", "metrics.port=8080")
    assert res.returncode != 0 and "metrics.port 8080 is the operator's health port" in res.stderr, res.stderr


def test_every_knob_takes_a_valid_value(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(GOOD))
    res = run_helm(*TEMPLATE, "-f", str(values))
    assert res.returncode == 0, res.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(res.stdout) if doc]
    assert {"PrometheusRule", "PodMonitor", "ConfigMap", "Deployment", "NetworkPolicy"} <= set(kinds), kinds
    assert "ServiceAccount" not in kinds and "ClusterRole" not in kinds, kinds
    assert "nvidia.com/gpu" in res.stdout and "dedicated" in res.stdout


def open_objects(node: dict[str, Any], path: str = "") -> list[str]:
    """The object nodes of a JSON schema that would take a key nobody reads (a misspelt value)."""
    found = []
    if node.get("type") == "object" and "additionalProperties" not in node:
        found.append(path or "/")
    for name, child in node.get("properties", {}).items():
        found += open_objects(child, f"{path}/{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += open_objects(node[key], f"{path}/{key}")
    for name, child in node.get("definitions", {}).items():
        found += open_objects(child, f"#/definitions/{name}")
    return found


def test_no_level_of_the_values_takes_an_unknown_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert open_objects(schema) == []


def test_notes_say_what_to_do_next_and_what_uninstall_keeps(helm: Any, namespace: str) -> None:
    # A release name of its own: the cluster-wide ClusterRole of an installed `kubeloop` would clash.
    release = "kubeloop-notes"
    res = helm("install", release, str(CHART), "-n", namespace, "--dry-run=server")
    notes = res.stdout.split("NOTES:", 1)[1]
    short = ",".join(k.short_names[0] for k in KINDS)
    assert f"kubectl -n default get {short}" in notes, notes
    assert "get kubeloop" in notes and "manifests/samples/" in notes, notes
    assert f"{release}-metrics.{namespace}.svc:9090/metrics" in notes, notes
    assert f"helm -n {namespace} test {release}" in notes, notes
    assert (
        "Helm never upgrades the CRDs" in notes
        and "kubectl apply --server-side --force-conflicts -f" in notes
    ), notes
    assert "Helm never deletes" in notes and "every Dataset, TrainingJob, ModelDeployment and" in notes, notes
    crds = " ".join(f"{k.plural}.kubeloop.io" for k in KINDS)
    assert f"kubectl delete crd {crds}" in notes, notes
