"""Types shared by the four kinds: the base model, conditions, references, resources, durations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubeloop.api.conditions import ConditionType, Reason

GROUP = "kubeloop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounded strings and lists keep the CEL cost estimate of the API server below its limits.
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
ShortText = Annotated[str, Field(min_length=1, max_length=253)]
# An artifact's URI in status: the store prefix, namespace and object name (up to 253 characters each) and
# a content hash, so longer than a name.
ArtifactURI = Annotated[str, Field(min_length=1, max_length=2048)]
ColumnName = Annotated[str, Field(min_length=1, max_length=128)]
Duration = Annotated[
    str, Field(max_length=32, pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$", examples=["30s", "5m", "1h30m"])
]
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(duration: str) -> float:
    """Seconds of a Duration like 1h30m."""
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(duration))


# A resource quantity, as in a container's resources: "500m", "1Gi", 2. The API server checks the string
# form against Kubernetes' quantity grammar, so "banana" is refused at the door, not by the pod.
Quantity = (
    Annotated[int, Field(ge=0)]
    | Annotated[
        str,
        Field(
            max_length=64,
            pattern=r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        ),
    ]
)
Sha256 = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$", min_length=64, max_length=64)]
# A free-form JSON value (estimator hyperparameters): their shape depends on the estimator, which the
# API server cannot know, so these subtrees keep unknown fields instead of being pruned or rejected.
FreeForm = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


class KubeloopModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected, docstrings as descriptions."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset optionals left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(KubeloopModel):
    """An observation of one aspect of the object's state, per the Kubernetes API conventions."""

    type: Annotated[str, Field(min_length=1, max_length=64)]
    """type of the condition in CamelCase, e.g. Ready."""
    status: Literal["True", "False", "Unknown"]
    """status of the condition: True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation the condition was computed from."""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """lastTransitionTime is when the status last changed."""
    reason: Annotated[
        str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    """reason is a one-word CamelCase cause of the last transition, for machines."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """message says what happened and, when something is wrong, what to do about it."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class LocalObjectReference(KubeloopModel):
    """A reference to an object in the same namespace."""

    name: Name
    """name of the referenced object."""


class MetricsSource(KubeloopModel):
    """Where the servers' counters are read: a Prometheus server, or (when absent) the inference pods'
    /metrics, scraped by the operator. Both give the same verdicts on the same traffic."""

    prometheus_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s?#]+$")] | None = Field(
        default=None, alias="prometheusURL"
    )
    """prometheusURL of a Prometheus server (no query string) that scrapes the inference pods with the
    labels namespace and pod (kubernetes_sd_configs role pod, or a PodMonitor); the operator queries its
    HTTP API (/api/v1/query) without credentials. Absent: the operator scrapes the pods itself."""


class SecretKeySelector(KubeloopModel):
    """A key of a Secret in the same namespace."""

    name: Name
    """name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """key within the Secret's data."""


_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
_SCALE = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": 1e-9, "u": 1e-6}
_SCALE.update({"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18})


def quantity_value(quantity: int | float | str) -> float:
    """The number a Kubernetes quantity stands for ("512Mi" -> 536870912.0, "1.5G", "100m", "1e3"). Pure;
    ValueError for a string outside the quantity grammar (the API server refuses those anyway)."""
    if isinstance(quantity, (int, float)):
        return float(quantity)
    found = _QUANTITY.match(quantity.strip())
    if found is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = float(found.group(1)), found.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * 10 ** float(suffix[1:])
    return number * _SCALE.get(suffix, 1)


class ResourceRequirements(KubeloopModel):
    """Compute resources of the pods, as in a container's resources."""

    requests: Annotated[dict[str, Quantity], Field(max_length=8)] | None = None
    """requests is the minimum amount of each resource (cpu, memory, ephemeral-storage) the pod needs."""
    limits: Annotated[dict[str, Quantity], Field(max_length=8)] | None = None
    """limits is the maximum amount of each resource the pod may use."""


@dataclass(frozen=True)
class Printer:
    """An additionalPrinterColumn of a CRD: what `kubectl get` shows."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def column(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
            "priority": self.priority,
        }


def condition_column(condition: str, name: str | None = None, priority: int = 0) -> Printer:
    return Printer(
        name=name or condition,
        type="string",
        json_path=f'.status.conditions[?(@.type=="{condition}")].status',
        description=f"Status of the {condition} condition.",
        priority=priority,
    )


AGE = Printer(
    name="Age", type="date", json_path=".metadata.creationTimestamp", description="Time since creation."
)


@dataclass(frozen=True)
class Kind:
    """What the CRD generator needs besides the spec and status models."""

    kind: str
    plural: str
    # Short names must match nothing else a cluster is likely to serve: on a clash kubectl warns and picks
    # a built-in over a CRD (`ds` is DaemonSets), else the first API group (`md` can be Cluster API's
    # MachineDeployments). tests/integration/test_api_names.py checks them against the API server.
    short_names: tuple[str, ...]
    description: str
    spec: type[KubeloopModel]
    status: type[KubeloopModel]
    columns: tuple[Printer, ...]
    # The condition that sums the object up: Ready for long-lived kinds, Succeeded for bounded ones. A
    # reconcile that waits or fails says so on it.
    summary: ConditionType
    # Every condition type the kind sets and every reason the operator gives it (see api.conditions).
    condition_types: tuple[ConditionType, ...]
    reasons: tuple[Reason, ...]
    # CEL rules on the whole object: the only place a rule may read metadata.name.
    root_rules: tuple[dict[str, str], ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()


def cel(*rules: tuple[str, str], one_of_required: tuple[tuple[str, ...], ...] = ()) -> ConfigDict:
    """Model config carrying CEL validation rules, each a (rule, message) pair, checked by the API server.

    CEL cannot see a field whose schema has no type (a free-form value such as a list of arbitrary JSON
    values): the API server leaves such a field out of the CEL type, so `has(self.field)` does not compile.
    Presence rules on such fields go into `one_of_required` instead: an OpenAPI `oneOf` of `required` lists
    (exactly one of the groups must be present), which a structural schema allows and the server checks.
    """
    extra: dict[str, Any] = {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}
    if one_of_required:
        extra["oneOf"] = [{"required": list(group)} for group in one_of_required]
    return ConfigDict(json_schema_extra=extra)


Verdict = Literal["pass", "fail", "inconclusive"]


class Check(KubeloopModel):
    """One analysis check (a canary step's, a Monitor's) over its window of traffic."""

    name: Literal["errorRate", "latencyP99", "predictionDistance", "inputDrift"]
    """name of the check."""
    verdict: Verdict
    """verdict: pass, fail, or inconclusive (too little evidence: too few requests, no baseline)."""
    value: float | None = None
    """value measured (error share, p99 in ms, prediction distance, the worst feature's drift score)."""
    threshold: float
    """threshold it was held to."""
    samples: Annotated[float, Field(ge=0)]
    """samples (requests or values) the verdict rests on."""
    message: Annotated[str, Field(max_length=1024)]
    """message says why, with the numbers."""
