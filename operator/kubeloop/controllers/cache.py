"""What the operator knows of the cluster: kopf indexes, fed by its watches, read by every reconcile.

A reconcile reads its object, its children and its dependencies from here, never by listing the API, so an
object where nothing happens costs nothing. kopf fills the indexes from the initial listing before any
handler runs, and updates an index before the handlers of the same event run.

Keys (every key starts with the namespace):
- our objects: ``(ns, "object", name)`` → body; ``(ns, "label", label_value)`` → name (child labels carry
  the label value of the parent's name, hashed when longer than 63 characters); ``(ns, "all")`` → body;
  ``(ns, "needs", kind, name)`` → dependent's name, for every object its spec names (``name`` ``*`` for
  "any object of that kind", e.g. a trainingJobSelector).
- children (Jobs, Deployments, Services, HPAs, pods labelled managed-by kubeloop): ``(ns, label_key,
  label_value)`` → body for each parent label, and ``(ns, "job-name", job)`` for the pods of a Job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from kubeloop.api import GROUP, VERSION, Kind
from kubeloop.contract import LABEL_JOB_NAME, LABEL_TRACK, LABEL_TRIAL, MANAGED, label_value, owner_label

Obj = dict[str, Any]
# The dependencies an object's spec names: (kind, name), name "*" for any object of the kind.
Needs = Callable[[Obj], Iterable[tuple[str, str]]]
ANY = "*"

# The child resources the operator makes or reads: (group, version, plural, kind).
CHILDREN = (
    ("batch", "v1", "jobs", "Job"),
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    ("", "v1", "pods", "Pod"),
)

CHILD_KINDS = frozenset(kind for _, _, _, kind in CHILDREN)


def object_index_id(kind: str) -> str:
    return f"index_{kind.lower()}"


def child_index_id(kind: str) -> str:
    return f"index_child_{kind.lower()}"


def _meta(body: Obj) -> Obj:
    return {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}


def slim(body: Obj) -> Obj:
    """What the reconciles read of an object, without what they never read: managedFields (often half of
    an object) and, for children, the pod template and spec. Memory grows with every object cached."""
    kind = body.get("kind")
    kept: Obj = {"apiVersion": body.get("apiVersion"), "kind": kind, "metadata": _meta(body)}
    if kind == "Deployment":
        spec = body.get("spec") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        kept["spec"] = {
            "replicas": spec.get("replicas"),
            "selector": spec.get("selector"),
            "template": {"metadata": template},
        }
    elif kind == "EndpointSlice":
        # Ready counts the endpoints that are ready pods of the served model.
        kept["endpoints"] = [
            {
                "conditions": e.get("conditions") or {},
                "targetRef": {"name": (e.get("targetRef") or {}).get("name")},
            }
            for e in body.get("endpoints") or []
        ]
    elif kind not in CHILD_KINDS:
        kept["spec"] = body.get("spec")
    if "status" in body:
        kept["status"] = body["status"]
    return kept


def object_keys(namespace: str, name: str, body: Obj, needs: Needs) -> dict[tuple[str, ...], Any]:
    """The index entries of one of our objects. Pure."""
    body = slim(body)
    keys: dict[tuple[str, ...], Any] = {
        (namespace, "object", name): body,
        (namespace, "label", label_value(name)): name,
        (namespace, "all"): body,
    }
    for kind, needed in needs(body.get("spec") or {}):
        keys[(namespace, "needs", kind, needed)] = name
    return keys


def child_keys(namespace: str, body: Obj) -> dict[tuple[str, ...], Any]:
    """The index entries of one child: under each parent label, and a pod under its Job. Pure."""
    body = slim(body)
    labels: Mapping[str, str] = body.get("metadata", {}).get("labels") or {}
    keys: dict[tuple[str, ...], Any] = {
        (namespace, key, value): body
        for key, value in labels.items()
        if key.startswith(f"{GROUP}/") and key not in (LABEL_TRIAL, LABEL_TRACK)
    }
    if body.get("kind") == "Pod" and LABEL_JOB_NAME in labels:
        keys[(namespace, LABEL_JOB_NAME, labels[LABEL_JOB_NAME])] = body
    return keys


def register_indexes(kinds: Iterable[tuple[Kind, Needs]]) -> None:
    """One kopf index per watched resource: our four kinds and the children."""
    for kind, needs in kinds:

        def index_object(
            namespace: str, name: str, body: kopf.Body, needs: Needs = needs, **_: Any
        ) -> dict[tuple[str, ...], Any]:
            return object_keys(namespace, name, dict(body), needs)

        kopf.index(GROUP, VERSION, kind.plural, id=object_index_id(kind.kind))(cast(Any, index_object))
    for group, version, plural, child in CHILDREN:

        def index_child(namespace: str, body: kopf.Body, **_: Any) -> dict[tuple[str, ...], Any]:
            return child_keys(namespace, dict(body))

        kopf.index(group, version, plural, labels=MANAGED, id=child_index_id(child))(cast(Any, index_child))


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


@dataclass(frozen=True)
class Cache:
    """Read access to the indexes; the Index objects are kopf's own and stay current."""

    indexes: Mapping[str, kopf.Index[Any, Any]]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Cache:
        return cls({k: v for k, v in kwargs.items() if k.startswith("index_")})

    def _lookup(self, index_id: str, key: tuple[str, ...]) -> list[Any]:
        index = self.indexes.get(index_id)
        if index is None or key not in index:
            return []
        return list(index[key])

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        found: Obj | None = _first(self._lookup(object_index_id(kind), (namespace, "object", name)))
        return found

    def in_namespace(self, kind: str, namespace: str) -> list[Obj]:
        return self._lookup(object_index_id(kind), (namespace, "all"))

    def names_by_label(self, kind: str, namespace: str, value: str) -> list[str]:
        return self._lookup(object_index_id(kind), (namespace, "label", value))

    def dependents(self, kinds: Iterable[str], kind: str, namespace: str, name: str) -> list[tuple[str, str]]:
        """(kind, name) of every object whose spec names this one (or any of its kind)."""
        found = []
        for dependent in kinds:
            for key in ((namespace, "needs", kind, name), (namespace, "needs", kind, ANY)):
                found += [(dependent, n) for n in self._lookup(object_index_id(dependent), key)]
        return sorted(set(found))

    def children(self, child: str, owner_kind: str, namespace: str, owner: str) -> list[Obj]:
        """The children of one kind (Job, Deployment, ..., Pod) labelled with this owner."""
        return self._lookup(child_index_id(child), (namespace, owner_label(owner_kind), label_value(owner)))

    def child(self, child: str, owner_kind: str, namespace: str, owner: str, name: str) -> Obj | None:
        found: Obj | None = next(
            (b for b in self.children(child, owner_kind, namespace, owner) if b["metadata"]["name"] == name),
            None,
        )
        return found

    def job_pods(self, namespace: str, job: str) -> list[Obj]:
        return self._lookup(child_index_id("Pod"), (namespace, LABEL_JOB_NAME, job))

    def owners(self, kinds: Iterable[str], child: Obj) -> list[tuple[str, str]]:
        """(kind, name) of the objects of ours a child is labelled with."""
        meta = child.get("metadata", {})
        labels: Mapping[str, str] = meta.get("labels") or {}
        found = []
        for kind in kinds:
            value = labels.get(owner_label(kind))
            if value:
                found += [(kind, n) for n in self.names_by_label(kind, meta.get("namespace", ""), value)]
        return found
