"""The CRDs are generated from the API models: pinned, structural, documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop.api import KINDS, crdgen

REPO = Path(__file__).resolve().parents[2]
# The only subtrees that keep unknown fields, and why: estimator hyperparameters (and searched values)
# depend on the estimator, which the API server cannot know.
FREE_FORM = {
    "spec.model.params",
    "spec.search.parameters[].values[]",
    "status.trials[].params",
    "status.model.params",
    "spec.actions.retrain.template.spec.model.params",
    "spec.actions.retrain.template.spec.search.parameters[].values[]",
}


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += walk(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema(kind: str) -> dict[str, Any]:
    crd = crdgen.crd(next(k for k in KINDS if k.kind == kind))
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("directory", ["crds", "helm/kubeloop/crds"])
def test_generated_files_are_current(directory: str) -> None:
    for name, text in crdgen.rendered().items():
        path = REPO / directory / name
        assert path.exists(), f"{path} is missing: run `make generate`"
        assert path.read_text() == text, f"{path} is stale: run `make generate`"


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_schema_is_structural_and_documented(kind: str) -> None:
    for path, node in walk(schema(kind)):
        assert not {"anyOf", "allOf", "$ref", "title"} & node.keys(), path
        # oneOf is structural only as a value validation: alternatives that name required fields.
        for alternative in node.get("oneOf", []):
            assert alternative.keys() == {"required"}, f"{kind} {path}: oneOf may only list required fields"
            assert set(alternative["required"]) <= node["properties"].keys(), path
        if path.startswith(("spec", "status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{kind} {path} has no description"
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        assert bool(preserve) == (path in FREE_FORM), f"{kind} {path}: unexpected free-form subtree"
        assert node.get("type") or preserve or node.get("x-kubernetes-int-or-string"), (
            f"{kind} {path} has no type"
        )


# Short names of widely installed add-ons' CRDs: a kubeloop short name equal to one of them means another
# kind on clusters that run it (the built-in API is checked against a real server by
# tests/integration/test_api_names.py).
ADDON_SHORT_NAMES = {
    "Cluster API": {"cl", "ma", "md", "ms", "mhc", "mp", "kcp", "cc"},
    "Prometheus Operator": {"smon", "pmon", "prb", "prom", "am", "promrule", "amcfg", "scfg"},
    "cert-manager": {"cert", "certs", "cr", "crs"},
    "Argo CD, Rollouts, Workflows": {"app", "apps", "appproj", "appset", "ro", "at", "ar", "wf", "cwf"},
    "Flux": {"ks", "hr", "gitrepo", "helmrepo", "hc", "ocirepo"},
    "Istio": {"vs", "dr", "gw", "se"},
    "Knative, KServe, Seldon": {"ksvc", "kservice", "rt", "rev", "isvc", "tm", "ig", "sdep"},
    "KEDA": {"so", "sj", "ta", "cta"},
    "KubeVirt, CDI": {"vm", "vms", "vmi", "vmis", "dv", "dvs"},
    "Kueue, Volcano": {"cq", "lq", "wl", "vcjob", "vj", "pg"},
    "Strimzi, ECK": {"k", "kt", "ku", "es", "kb"},
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_short_names_are_not_those_of_common_add_ons(kind: Any) -> None:
    taken = {name: addon for addon, names in ADDON_SHORT_NAMES.items() for name in names}
    assert [(n, taken[n]) for n in kind.short_names if n in taken] == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names_columns_and_subresources(kind: Any) -> None:
    crd = crdgen.crd(kind)
    names = crd["spec"]["names"]
    assert names["categories"] == ["kubeloop"]
    assert names["shortNames"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[-1] == "Age" and len(columns) >= 3


def test_printer_columns_show_what_users_want() -> None:
    columns = {k.kind: {c.name for c in k.columns} for k in KINDS}
    assert {"Ready", "Version", "Rows"} <= columns["Dataset"]
    assert {"Succeeded", "Version", "Accuracy", "Model"} <= columns["TrainingJob"]
    assert {"Ready", "Model", "Canary"} <= columns["ModelDeployment"]
    assert {"Ready", "Drift"} <= columns["Monitor"]


def test_cross_field_rules_are_cel() -> None:
    rules = {
        path: [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        for kind in ("Dataset", "TrainingJob", "ModelDeployment")
        for path, node in walk(schema(kind))
    }
    assert any("size() == 1" in r for r in rules["spec.source"])
    assert any("self.parallelism <= self.maxTrials" in r for r in rules["spec.search"])
    assert any("isSorted()" in r for r in rules["spec.rollout"])


def test_defaults_and_enums() -> None:
    nodes = dict(walk(schema("TrainingJob")))
    assert nodes["spec.split.testFraction"]["default"] == 0.2
    assert nodes["spec.search.strategy"]["enum"] == ["grid", "random"]
    assert nodes["spec.backoffLimit"]["maximum"] == 10
    assert "default" not in nodes["spec.image"]


def test_samples_parse_with_the_models() -> None:
    by_kind = {k.kind: k for k in KINDS}
    samples = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
    assert {yaml.safe_load(p.read_text())["kind"] for p in samples} == set(by_kind)
    for path in samples:
        body = yaml.safe_load(path.read_text())
        by_kind[body["kind"]].spec.model_validate(body["spec"])


def cel_visible(node: dict[str, Any]) -> bool:
    """Whether the API server gives this field a CEL type (untyped, free-form subtrees are left out)."""
    if node.get("x-kubernetes-int-or-string"):
        return True
    if node.get("type") == "array":
        return isinstance(node.get("items"), dict) and cel_visible(node["items"])
    return bool(node.get("type"))


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_cel_rules_read_only_fields_cel_can_see(kind: str) -> None:
    """A rule naming a field CEL cannot see fails to compile, and the API server rejects the whole CRD."""
    for path, node in walk(schema(kind)):
        fields = dict(node.get("properties", {}))
        for child in node.get("properties", {}).values():  # fields of list items, read via all()/exists()
            fields.update((child.get("items") or {}).get("properties", {}))
        for rule in node.get("x-kubernetes-validations", []):
            for name, child in fields.items():
                if re.search(rf"\.{name}\b", rule["rule"]):
                    assert cel_visible(child), f"{kind} {path}: {rule['rule']!r} reads untyped field {name}"
