"""Monitor: watches a ModelDeployment for SLO violations and drift, and acts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubeloop.api.common import (
    AGE,
    Check,
    Conditions,
    Duration,
    Kind,
    KubeloopModel,
    LocalObjectReference,
    MetricsSource,
    Printer,
    ShortText,
    cel,
    condition_column,
)
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.trainingjob import TrainingJobSpec


class SLO(KubeloopModel):
    """Service-level objectives, judged at every interval over the last window of traffic."""

    model_config = cel(
        (
            "has(self.maxErrorRate) || has(self.maxP99LatencyMs)",
            "slo needs maxErrorRate, maxP99LatencyMs or both",
        ),
    )

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxErrorRate is the largest share of 5xx answers; violated only when the share in the window is
    significantly above it (one-sided binomial test, p < 0.05)."""
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = Field(default=None, alias="maxP99LatencyMs")
    """maxP99LatencyMs is the largest 99th percentile of request latency, in milliseconds, from the
    servers' histogram buckets over the window."""
    window: Duration = "5m"
    """window of traffic each check looks at; at least four intervals, so that one late scrape does not
    decide."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """minRequests in the window before a verdict; fewer (0/0 included) is inconclusive."""


class Drift(KubeloopModel):
    """Drift detection against the baseline of the serving model's training data."""

    method: Literal["psi", "ks", "js", "chi2"] = "psi"
    """method: psi (population stability index), ks (Kolmogorov-Smirnov), js (Jensen-Shannon), chi2.
    Categorical features are tested with chi2 when the method is ks."""
    threshold: Annotated[float, Field(gt=0)] | None = None
    """threshold above which a feature counts as drifted (a score for psi and js; for ks and chi2 a
    p-value, drift below it). Default per method, from bench/drift_bench.py: psi 0.2, js 0.15, ks 0.01,
    chi2 0.01."""
    min_samples: Annotated[int, Field(ge=1)] | None = None
    """minSamples is the fewest values of a feature in the window before it is judged. Default per method,
    from bench/drift_bench.py: psi 200, js 300, ks 50, chi2 50 (PSI alone averages about 0.09 on 10 bins
    at 100 values when nothing changed)."""
    correction: Literal["none", "bonferroni", "holm", "bh"] = "holm"
    """correction of the p-values for testing many features at once (ks, chi2)."""
    window: Duration = "30m"
    """window of traffic judged at each interval."""


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
    """source of the counters: a Prometheus server, or the pods scraped by the operator at every interval
    when absent."""
    slo: SLO | None = None
    """slo are the service-level objectives."""
    drift: Drift | None = None
    """drift detection settings."""
    actions: Actions | None = None
    """actions taken when a check fails."""


Verdict = Literal["pass", "fail", "inconclusive"]
Message = Annotated[str, Field(max_length=1024)]
Sha = Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]


class FeatureScore(KubeloopModel):
    """One feature's drift in the last check."""

    feature: Annotated[str, Field(max_length=128)]
    """feature name."""
    verdict: Verdict
    """verdict for this feature (after the correction, for ks and chi2)."""
    method: Literal["psi", "ks", "js", "chi2"]
    """method applied."""
    score: float | None = None
    """score: PSI, JS distance, KS statistic or chi-square statistic."""
    p_value: float | None = None
    """pValue after the correction (ks, chi2)."""
    samples: Annotated[float, Field(ge=0)]
    """samples of this feature in the window."""


class SLOVerdict(KubeloopModel):
    """The last SLO check."""

    error_rate: float | None = None
    """errorRate measured."""
    p99_latency_ms: float | None = Field(default=None, alias="p99LatencyMs")
    """p99LatencyMs measured."""
    requests: Annotated[float, Field(ge=0)] | None = None
    """requests in the window."""
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
    training_job: Annotated[str, Field(max_length=253)] | None = None
    """trainingJob a retrain created."""
    sha256: Sha | None = None
    """sha256 of the model a rollback rejected."""


class RejectedModel(KubeloopModel):
    """A model this Monitor asked its ModelDeployment to roll back from."""

    sha256: Sha
    """sha256 of the model."""
    reason: Message
    """reason: the SLO check that failed, with the numbers."""
    time: ShortText
    """time of the decision."""


class MonitorStatus(KubeloopModel):
    """The observed state of the monitoring."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Ready, Drifted and SLOViolated."""
    last_check_time: ShortText | None = None
    """lastCheckTime is when the checks last ran."""
    served_sha256: Sha | None = None
    """servedSha256 is the model the last check looked at (the ModelDeployment's status.model)."""
    window_seconds: Annotated[float, Field(ge=0)] | None = None
    """windowSeconds of traffic the last check covered (shorter than the configured windows just after the
    model or the operator changed: the counters are the operator's, in memory)."""
    checks: Annotated[list[Check], Field(max_length=3)] | None = None
    """checks of the last run, each with value, threshold and sample count."""
    drift_scores: Annotated[dict[str, float], Field(max_length=500)] | None = None
    """driftScores per feature from the last check."""
    features: Annotated[list[FeatureScore], Field(max_length=200)] | None = None
    """features: each feature's drift verdict from the last check (the first 200)."""
    slo: SLOVerdict | None = None
    """slo verdict of the last check."""
    last_action: LastAction | None = None
    """lastAction taken and why."""
    retrains: Annotated[int, Field(ge=0)] | None = None
    """retrains this Monitor has made."""
    last_retrain_time: ShortText | None = None
    """lastRetrainTime is when the last retrain was made (coolDown counts from it)."""
    rejected: Annotated[list[RejectedModel], Field(max_length=10)] | None = None
    """rejected models (the newest ten): the ModelDeployment rolls back from each to its previous model."""


MONITOR = Kind(
    kind="Monitor",
    summary=ConditionType.READY,
    condition_types=(ConditionType.READY, ConditionType.DRIFTED, ConditionType.SLO_VIOLATED),
    reasons=(
        Reason.WAITING_FOR_MODEL_DEPLOYMENT,
        Reason.WATCHING,
        Reason.NOT_CHECKED,
        Reason.CHECKED,
        Reason.WITHIN_OBJECTIVES,
        Reason.OBJECTIVE_MISSED,
        Reason.NO_DRIFT,
        Reason.DRIFT_DETECTED,
        Reason.NOT_ENOUGH_TRAFFIC,
        Reason.NO_BASELINE,
        Reason.NO_PODS,
        Reason.METRICS_UNAVAILABLE,
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="monitors",
    short_names=("kmon",),
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
