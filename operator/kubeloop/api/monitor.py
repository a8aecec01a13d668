"""Monitor: watches a ModelDeployment for SLO violations and drift, and acts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubeloop.api.common import (
    AGE,
    Conditions,
    Duration,
    Kind,
    KubeloopModel,
    LocalObjectReference,
    Printer,
    ShortText,
    cel,
    condition_column,
)
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.trainingjob import TrainingJobSpec


class MetricsSource(KubeloopModel):
    """Where the Monitor reads metrics; the inference pods are scraped directly when absent."""

    prometheus_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = Field(
        default=None, alias="prometheusURL"
    )
    """prometheusURL of a Prometheus server that scrapes the inference pods."""


class SLO(KubeloopModel):
    """Service-level objectives."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxErrorRate is the largest share of failed requests."""
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = Field(default=None, alias="maxP99LatencyMs")
    """maxP99LatencyMs is the largest 99th percentile of request latency, in milliseconds."""


class Drift(KubeloopModel):
    """Drift detection against the baseline of the serving model's training data."""

    method: Literal["psi", "ks", "js", "chi2"] = "psi"
    """method: psi (population stability index), ks (Kolmogorov-Smirnov), js (Jensen-Shannon), chi2."""
    threshold: Annotated[float, Field(gt=0)] = 0.2
    """threshold above which a feature counts as drifted (a score for psi and js, a p-value below it for ks
    and chi2)."""
    min_samples: Annotated[int, Field(ge=1)] = 100
    """minSamples is the fewest predictions before drift is judged."""
    correction: Literal["none", "bonferroni", "holm"] = "bonferroni"
    """correction for testing many features at once (ks, chi2)."""


class TrainingJobTemplate(KubeloopModel):
    """The TrainingJob a retrain creates; its datasetRef is kept, the latest Dataset version is used."""

    labels: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=20)] | None = None
    """labels of the created TrainingJob (so a ModelDeployment with updatePolicy Auto can select it)."""
    spec: TrainingJobSpec
    """spec of the created TrainingJob."""


class Retrain(KubeloopModel):
    """Create a TrainingJob when drift is found."""

    template: TrainingJobTemplate
    """template of the TrainingJob."""
    cool_down: Duration = "1h"
    """coolDown is the least time between two retrains."""
    max_retrains: Annotated[int, Field(ge=1, le=100)] = 3
    """maxRetrains bounds the retrains this Monitor ever makes, so it cannot loop."""


class Actions(KubeloopModel):
    """What the Monitor does when a check fails."""

    alert: bool = True
    """alert emits an Event, sets a condition and a metric."""
    rollback: bool = False
    """rollback returns the ModelDeployment to its previous model on an SLO violation."""
    retrain: Retrain | None = None
    """retrain creates a TrainingJob on drift."""


class MonitorSpec(KubeloopModel):
    """The desired monitoring."""

    model_config = cel(
        ("has(self.slo) || has(self.drift)", "set slo, drift or both: a Monitor needs something to check"),
    )

    deployment_ref: LocalObjectReference
    """deploymentRef is the ModelDeployment to watch."""
    interval: Duration = "1m"
    """interval between checks."""
    source: MetricsSource | None = None
    """source of metrics."""
    slo: SLO | None = None
    """slo are the service-level objectives."""
    drift: Drift | None = None
    """drift detection settings."""
    actions: Actions | None = None
    """actions taken when a check fails."""


class SLOVerdict(KubeloopModel):
    """The last SLO check."""

    error_rate: float | None = None
    """errorRate measured."""
    p99_latency_ms: float | None = Field(default=None, alias="p99LatencyMs")
    """p99LatencyMs measured."""
    violated: bool = False
    """violated is true when an objective was missed."""


class LastAction(KubeloopModel):
    """The last action the Monitor took."""

    type: Literal["Alert", "Rollback", "Retrain"]
    """type of action."""
    reason: Annotated[str, Field(max_length=1024)]
    """reason the action was taken."""
    time: ShortText
    """time of the action."""


class MonitorStatus(KubeloopModel):
    """The observed state of the monitoring."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Ready, Drifted and SLOViolated."""
    last_check_time: ShortText | None = None
    """lastCheckTime is when the checks last ran."""
    drift_scores: Annotated[dict[str, float], Field(max_length=500)] | None = None
    """driftScores per feature from the last check."""
    slo: SLOVerdict | None = None
    """slo verdict of the last check."""
    last_action: LastAction | None = None
    """lastAction taken and why."""
    retrains: Annotated[int, Field(ge=0)] | None = None
    """retrains this Monitor has made."""


MONITOR = Kind(
    kind="Monitor",
    summary=ConditionType.READY,
    condition_types=(ConditionType.READY, ConditionType.DRIFTED, ConditionType.SLO_VIOLATED),
    reasons=(
        Reason.WAITING_FOR_MODEL_DEPLOYMENT,
        Reason.WATCHING,
        Reason.NOT_CHECKED,
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="monitors",
    short_names=("mon",),
    description="A Monitor watches a ModelDeployment's SLOs and feature drift "
    "and alerts, rolls back or retrains.",
    spec=MonitorSpec,
    status=MonitorStatus,
    columns=(
        condition_column("Ready"),
        Printer("Deployment", "string", ".spec.deploymentRef.name", "ModelDeployment watched."),
        condition_column("Drifted", "Drift"),
        condition_column("SLOViolated", "SLO"),
        Printer("Last-Check", "date", ".status.lastCheckTime", "When the checks last ran.", priority=1),
        AGE,
    ),
)
