"""Every name a user types for a kubeloop kind means that kind and nothing else the API server serves.

kubectl resolves a name it shares with another resource to one of them, a built-in first, with only a
warning: `kubectl get ds` listed DaemonSets, never Datasets. The names come from the API models, so a new
short name that clashes fails here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from kubeloop.api import GROUP, KINDS, VERSION
from kubeloop.api.common import Kind

SPECS = {
    "Dataset": {"source": {"builtin": "iris"}},
    "TrainingJob": {"datasetRef": {"name": "iris"}, "model": {"estimator": "LogisticRegression"}},
    "ModelDeployment": {"model": {"uri": "s3://b/models/x", "sha256": "0" * 64}},
    "Monitor": {"deploymentRef": {"name": "iris"}, "drift": {}},
}


@dataclass(frozen=True)
class Resource:
    name: str
    short_names: tuple[str, ...]
    api_version: str
    kind: str

    def answers_to(self, word: str) -> bool:
        # kubectl matches the plural, the singular (the lowercased kind unless a CRD says otherwise:
        # ours do not) and the short names.
        return word in (self.name, self.kind.lower(), *self.short_names)


def parse_api_resources(table: str) -> list[Resource]:
    """The rows of `kubectl api-resources -o wide`, cut at the header's column starts.

    The columns are padded to the widest cell, so a start is where a header word begins; an empty cell
    (a resource without short names) is blank there, which splitting on whitespace would lose."""
    header, *rows = table.splitlines()
    columns = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND", "VERBS"]
    starts = [header.index(column) for column in columns]
    ends = [*starts[1:], None]
    resources = []
    for row in rows:
        cell = dict(zip(columns, (row[a:b].strip() for a, b in zip(starts, ends, strict=True)), strict=True))
        short = tuple(s for s in cell["SHORTNAMES"].split(",") if s)
        resources.append(Resource(cell["NAME"], short, cell["APIVERSION"], cell["KIND"]))
    return resources


def names(kind: Kind) -> list[str]:
    return [kind.plural, kind.singular, *kind.short_names]


@pytest.fixture(scope="module")
def served(kubectl: Any) -> list[Resource]:
    resources = parse_api_resources(kubectl("api-resources", "-o", "wide").stdout)
    assert any(r.kind == "DaemonSet" for r in resources), "the table was not parsed"
    return resources


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_each_name_of_a_kind_matches_that_kind_alone(served: list[Resource], kind: Kind) -> None:
    for word in names(kind):
        matches = [f"{r.name} ({r.api_version})" for r in served if r.answers_to(word)]
        assert matches == [f"{kind.plural} ({GROUP}/{VERSION})"], f"{word!r} matches {matches}"


def test_kubectl_get_by_any_name_lists_the_kubeloop_object(kubectl: Any, namespace: str) -> None:
    """What a user sees: `kubectl get dset` lists the Dataset, with no warning about another resource."""
    for kind in KINDS:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind.kind,
            "metadata": {"name": "iris", "namespace": namespace},
            "spec": SPECS[kind.kind],
        }
        kubectl("apply", "-f", "-", input=json.dumps(body))
    for kind in KINDS:
        for word in names(kind):
            res = kubectl("get", word, "-n", namespace, "-o", "name")
            assert res.stdout == f"{kind.singular}.{GROUP}/iris\n", (word, res.stdout)
            assert res.stderr == "", (word, res.stderr)
    listed = kubectl("get", "kubeloop", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == sorted(f"{k.singular}.{GROUP}/iris" for k in KINDS)
