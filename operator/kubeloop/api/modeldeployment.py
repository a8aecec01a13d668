"""ModelDeployment: a model served online by the ONNX inference server."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from kubeloop.api.common import (
    AGE,
    ArtifactURI,
    Check,
    Conditions,
    Duration,
    Kind,
    KubeloopModel,
    LocalObjectReference,
    MetricsSource,
    Name,
    Printer,
    ResourceRequirements,
    SecretKeySelector,
    Sha256,
    ShortText,
    cel,
    condition_column,
)
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.trainingjob import DatasetRef


class LabelSelector(KubeloopModel):
    """Selects objects by their labels."""

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]], Field(min_length=1, max_length=20)
    ]
    """matchLabels: every label must match."""


class ModelSource(KubeloopModel):
    """The model to serve: from a TrainingJob, or an artifact URI with its digest."""

    model_config = cel(
        ("has(self.trainingJobRef) != has(self.uri)", "set exactly one of trainingJobRef or uri"),
        ("has(self.uri) == has(self.sha256)", "uri and sha256 must be set together"),
    )

    training_job_ref: LocalObjectReference | None = None
    """trainingJobRef is a TrainingJob whose model (once it succeeded and passed its gate) is served."""
    uri: Annotated[str, Field(max_length=2048, pattern=r"^(s3|file|pvc)://.+$")] | None = None
    """uri of a model directory in the artifact store (holding model.onnx)."""
    sha256: Sha256 | None = None
    """sha256 of model.onnx; the server refuses a model with another digest."""


class Autoscaling(KubeloopModel):
    """A HorizontalPodAutoscaler for the server."""

    model_config = cel(("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas"))

    min_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    """minReplicas is the fewest replicas."""
    max_replicas: Annotated[int, Field(ge=1, le=100)]
    """maxReplicas is the most replicas."""
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 80
    """targetCpuUtilization is the average CPU use, in percent of requests, to scale at."""
    scale_down_stabilization: Duration = "5m"
    """scaleDownStabilization: the HPA scales down to the highest recommendation of this long a window,
    so a short lull does not remove pods that the next burst needs."""


class CanaryStep(KubeloopModel):
    """One step of a canary rollout."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """weight is the canary's share of the server pods in percent during this step: the canary Deployment
    gets round(stable * weight / (100 - weight)) replicas, at least one, next to the unchanged stable
    Deployment behind the one Service (status.canary.observedWeight is the share of requests it actually
    got). Weight 100 promotes."""
    pause: Duration = "1m"
    """pause is how long the step's analysis window lasts, from the moment every canary pod is ready."""


class Analysis(KubeloopModel):
    """Checks of each canary step, over the same window for canary and stable, from the servers' own
    counters. Each check ends pass, fail or inconclusive; a failed check rolls back, an inconclusive one
    (too few requests) holds the step until rollout.progressDeadline. Only the checks whose limit is set
    run."""

    model_config = cel(
        (
            "has(self.maxErrorRate) || has(self.maxP99LatencyMs) || has(self.maxDrift)"
            " || has(self.maxPredictionDistance)",
            "analysis needs at least one of maxErrorRate, maxP99LatencyMs, maxDrift, maxPredictionDistance",
        ),
    )

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxErrorRate is the largest share of 5xx answers; the check fails only when the canary's share is
    above it and significantly above the stable's (one-sided Fisher test, p < 0.05)."""
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = Field(default=None, alias="maxP99LatencyMs")
    """maxP99LatencyMs is the largest 99th percentile of the canary's request latency, in milliseconds, from
    the histogram buckets."""
    max_drift: Annotated[float, Field(gt=0)] | None = None
    """maxDrift is the largest PSI of any input feature of the canary's traffic against the canary model's
    training baseline."""
    max_prediction_distance: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxPredictionDistance is the largest Jensen-Shannon distance (base 2, 0 to 1) between the canary's
    and the stable's prediction distributions (classes, or the regression histogram)."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """minRequests is the fewest requests each side must serve in the window before a check decides;
    fewer is inconclusive."""
    source: MetricsSource | None = None
    """source of the counters: a Prometheus server, or the pods scraped by the operator when absent. When
    Prometheus does not answer, every check is inconclusive and holds the step."""


class Rollout(KubeloopModel):
    """How a new model replaces the old one."""

    model_config = cel(
        ("self.strategy == 'Canary' || !has(self.steps)", "steps need strategy Canary"),
        ("self.strategy != 'Canary' || has(self.steps)", "strategy Canary needs steps"),
        (
            "!has(self.steps) || (self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1))",
            "step weights must be strictly ascending",
        ),
    )

    strategy: Literal["Recreate", "Rolling", "Canary"] = "Rolling"
    """strategy: Recreate stops the old pods first, Rolling replaces them gradually, Canary runs the new
    model in a second Deployment beside the stable one and promotes or rolls back on analysis. The first
    model of a ModelDeployment has nothing to compare with and rolls out as Rolling."""
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=10)] | None = None
    """steps of a canary rollout, weights ascending and at most 100."""
    analysis: Analysis | None = None
    """analysis checked at the end of each canary step; without it a step advances after its pause."""
    progress_deadline: Duration = "10m"
    """progressDeadline is how long a step may wait, after its pause, for its canary pods to be ready and
    its analysis to be conclusive; then onDeadline decides."""
    on_deadline: Literal["Rollback", "Promote"] = "Rollback"
    """onDeadline: what an inconclusive step does at its deadline. Rollback (the default) never promotes a
    model on no evidence."""


# Refused until scheduled scoring exists: a field the operator does not honour must not be accepted.
SCHEDULE_NOT_BUILT: dict[str, JsonValue] = {
    "rule": "false",
    "message": "batch.schedule (a CronJob) is not available yet; remove it: without it every new Dataset "
    "version and every newly served model is scored once",
}


class Batch(KubeloopModel):
    """Batch scoring: a Dataset version scored with exactly the model this ModelDeployment serves
    (status.model.sha256), as a Kubernetes Indexed Job whose indexes split the snapshot's Parquet parts.
    Each index writes one output part per input part it scores (same rows, same order); the last index to
    finish writes the output manifest, so output without a manifest is never complete. Scored once per
    (Dataset version, served model, this spec): a new version, a newly served model or a change here
    scores again; a failed run is not retried until one of them changes."""

    model_config = cel(
        ("!has(self.parallelism) || self.parallelism <= self.shards", "parallelism must not exceed shards"),
    )

    dataset_ref: DatasetRef
    """datasetRef is the Dataset to score: its current version (each new version is scored once it is
    ingested), or the version it pins."""
    shards: Annotated[int, Field(ge=1, le=100)] = 1
    """shards is the number of indexes of the Job (its completions): the snapshot's parts are dealt to
    them, the largest first to the least loaded, so each scores about the same number of rows. An index
    with no part (more shards than parts) writes nothing and succeeds."""
    parallelism: Annotated[int, Field(ge=1, le=100)] | None = None
    """parallelism is how many indexes run at once (the Job's parallelism); shards when absent. More nodes
    run more shards side by side: Kubernetes is the scale-out engine."""
    backoff_limit_per_index: Annotated[int, Field(ge=0, le=10)] = 2
    """backoffLimitPerIndex is how often one index is retried after its pod failed (infrastructure
    trouble: exit 1, an eviction does not count). A retried index rewrites its own parts with the same
    bytes, so the output does not change. A data error (exit 2: a column missing, a null the model
    cannot take) fails the whole Job at once."""
    active_deadline_seconds: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    """activeDeadlineSeconds bounds the whole Job."""
    resources: ResourceRequirements | None = None
    """resources of each index's pod; requests 250m CPU and 512Mi, limit 1Gi when absent. ONNX Runtime
    uses as many threads as the pod has CPUs (its CPU limit)."""
    schedule: Annotated[str, Field(min_length=9, max_length=128)] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-validations": [SCHEDULE_NOT_BUILT]}
    )
    """schedule (cron) would make the scoring a CronJob. Not built yet: the API server refuses it."""


class Auth(KubeloopModel):
    """Bearer-token authentication of the inference API."""

    token_secret_ref: SecretKeySelector
    """tokenSecretRef is the Secret key holding the accepted tokens, one per line; mounted as a file."""


# A label key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters; the API server
# refuses a NetworkPolicy with any other, so the CRD refuses it first. No backslash in the pattern: the key
# check of a map becomes a CEL string literal, where "\." is no valid escape.
LabelKey = Annotated[
    str,
    Field(
        max_length=317,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    ),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]


class SelectorRequirement(KubeloopModel):
    """One requirement of a label selector, as in Kubernetes' matchExpressions."""

    model_config = cel(
        (
            "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
            " : !has(self.values) || size(self.values) == 0",
            "In and NotIn need values; Exists and DoesNotExist take none",
        )
    )

    key: LabelKey
    """key of the label."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """operator relating the label's value to values."""
    values: Annotated[list[LabelValue], Field(max_length=20)] | None = None
    """values for In and NotIn."""


class PeerSelector(KubeloopModel):
    """A Kubernetes label selector; empty, it selects everything."""

    match_labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=20)] | None = None
    """matchLabels: every label must have this value."""
    match_expressions: Annotated[list[SelectorRequirement], Field(max_length=20)] | None = None
    """matchExpressions: every requirement must hold."""


class NetworkPeer(KubeloopModel):
    """Clients allowed to reach the inference pods, as a NetworkPolicy peer: podSelector alone selects pods
    in the ModelDeployment's namespace, namespaceSelector alone every pod of the selected namespaces, both
    the selected pods of the selected namespaces."""

    model_config = cel(
        ("has(self.namespaceSelector) || has(self.podSelector)", "set namespaceSelector, podSelector or both")
    )

    namespace_selector: PeerSelector | None = None
    """namespaceSelector selects namespaces by their labels (kubernetes.io/metadata.name is the name);
    {} selects every namespace."""
    pod_selector: PeerSelector | None = None
    """podSelector selects pods by their labels; {} selects every pod."""


class Network(KubeloopModel):
    """Who may reach the inference pods (a NetworkPolicy the operator makes and keeps)."""

    allow_from: Annotated[list[NetworkPeer], Field(min_length=1, max_length=20)] | None = None
    """allowFrom lists the clients allowed on the serving port. Absent: the pods of the ModelDeployment's
    own namespace only. The operator (canary analysis, Monitor scrapes) and the metrics scraper the
    operator is configured with are always allowed. [{namespaceSelector: {}}] allows every pod."""


class ModelDeploymentSpec(KubeloopModel):
    """The desired inference service."""

    model_config = cel(
        ("!(has(self.replicas) && has(self.autoscaling))", "set replicas or autoscaling, not both"),
        (
            "self.updatePolicy != 'Auto' || has(self.trainingJobSelector)",
            "updatePolicy Auto needs trainingJobSelector",
        ),
    )

    model: ModelSource
    """model to serve."""
    update_policy: Literal["Manual", "Auto"] = "Manual"
    """updatePolicy Auto rolls out the newest succeeded, gate-passing TrainingJob matching
    trainingJobSelector."""
    training_job_selector: LabelSelector | None = None
    """trainingJobSelector selects the TrainingJobs updatePolicy Auto picks from."""
    replicas: Annotated[int, Field(ge=0, le=100)] | None = None
    """replicas of the server; 1 when neither replicas nor autoscaling is set."""
    autoscaling: Autoscaling | None = None
    """autoscaling scales the server with a HorizontalPodAutoscaler."""
    rollout: Rollout | None = None
    """rollout says how a new model replaces the old one."""
    resources: ResourceRequirements | None = None
    """resources of each server pod."""
    batch: Batch | None = None
    """batch scores a Dataset with the served model into the artifact store (status.batch says where)."""
    auth: Auth | None = None
    """auth requires bearer tokens on the inference API."""
    network: Network | None = None
    """network says who may reach the inference pods; absent, the pods of the same namespace only."""


class ServedModel(KubeloopModel):
    """The model the ready pods loaded and self-tested."""

    uri: ArtifactURI
    """uri of the model."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of model.onnx."""
    training_job: Name | None = None
    """trainingJob that produced the model."""
    since: Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})] | None = None
    """since is when this model began to serve."""


Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]
Message = Annotated[str, Field(max_length=1024)]


class CanaryStatus(KubeloopModel):
    """Where a canary rollout stands."""

    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of the canary model."""
    uri: ArtifactURI
    """uri of the canary model."""
    training_job: Name | None = None
    """trainingJob that produced the canary model."""
    phase: Literal["Starting", "Analysing", "Promoting"]
    """phase: Starting (canary pods becoming ready), Analysing (the step's window runs), Promoting (the
    stable Deployment takes the canary model; the canary pods serve until it is ready)."""
    step: Annotated[int, Field(ge=0)]
    """step is the index of the current step."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """weight is the step's configured weight in percent."""
    replicas: Annotated[int, Field(ge=0)]
    """replicas of the canary Deployment in this step."""
    observed_weight: Annotated[float, Field(ge=0, le=100)] | None = None
    """observedWeight is the canary's share of the requests in the window, in percent (kube-proxy balances
    connections, not requests, so it can differ from weight)."""
    step_start_time: Timestamp
    """stepStartTime is when the step began."""
    window_start_time: Timestamp | None = None
    """windowStartTime is when the analysis window began: every canary pod ready (and, with a Prometheus
    source, scraped once); again after an operator restart when the operator scrapes the pods itself, since
    the window's counters then live in its memory."""
    checks: Annotated[list[Check], Field(max_length=4)] | None = None
    """checks of the analysis over the window so far."""
    last_check_time: Timestamp | None = None
    """lastCheckTime is when the checks were last computed: the window's end so far."""
    message: Message | None = None
    """message: what the rollout waits for."""


class RejectedModel(KubeloopModel):
    """A model a canary rolled back; not tried again until the spec changes."""

    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of the rejected model."""
    training_job: Name | None = None
    """trainingJob that produced it."""
    generation: Annotated[int, Field(ge=0)]
    """generation of the spec it was rejected under."""
    reason: Annotated[str, Field(max_length=64)]
    """reason: the failed check, Aborted, or DeadlineExceeded."""
    message: Message
    """message: why."""
    time: Timestamp
    """time of the rollback."""


class RolloutResult(KubeloopModel):
    """How the last canary rollout ended."""

    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of the canary model."""
    training_job: Name | None = None
    """trainingJob that produced it (with updatePolicy Auto: the candidate it picked)."""
    result: Literal["Promoted", "RolledBack"]
    """result of the rollout."""
    reason: Annotated[str, Field(max_length=64)]
    """reason: AnalysisPassed, Promoted by hand, the failed check, ..."""
    message: Message
    """message: the decision, with the numbers."""
    time: Timestamp
    """time it ended."""


class BatchStatus(KubeloopModel):
    """The last batch scoring run: what it scored, with which model, and where the output is."""

    job: Name
    """job is the Indexed Job of the run (kept by the operator's Job history limits)."""
    state: Literal["Running", "Succeeded", "Failed"]
    """state of the run; the BatchScored condition says the same with a message."""
    dataset: Name
    """dataset is the Dataset scored."""
    dataset_version: Annotated[str, Field(max_length=64)]
    """datasetVersion is the version scored (the first 16 hex of its content hash)."""
    input_uri: ArtifactURI = Field(alias="inputURI")
    """inputURI is the manifest of the snapshot scored."""
    model_sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """modelSha256 is the digest of the model that scored it: the one served (status.model) when the run
    began."""
    shards: Annotated[int, Field(ge=1)]
    """shards of the run (the Job's completions)."""
    succeeded_shards: Annotated[int, Field(ge=0)] | None = None
    """succeededShards is how many indexes finished."""
    rows: Annotated[int, Field(ge=0)] | None = None
    """rows scored: every row of the version once the run succeeded (the output has exactly as many rows
    as the input), the rows of the finished shards while it runs."""
    output_uri: ArtifactURI = Field(alias="outputURI")
    """outputURI is the output manifest (manifest.json, written last); the parts are beside it. It exists
    only once the run succeeded."""
    start_time: Timestamp | None = None
    """startTime is when the operator created the Job."""
    completion_time: Timestamp | None = None
    """completionTime is when the operator saw the run end."""
    message: Message | None = None
    """message: how the run ended, or what it waits for."""


class ModelDeploymentStatus(KubeloopModel):
    """The observed inference service."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Ready (a pod loaded the wanted model and answered a test prediction), Progressing,
    Degraded, and BatchScored with spec.batch."""
    url: ShortText | None = None
    """url of the inference service inside the cluster."""
    model: ServedModel | None = None
    """model that is served."""
    previous_model: ServedModel | None = None
    """previousModel served before it: where a rollback goes."""
    wanted_sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")] | None = None
    """wantedSha256 is the digest being rolled out."""
    replicas: Annotated[int, Field(ge=0)] | None = None
    """replicas wanted."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """readyReplicas serving the wanted model."""
    canary: CanaryStatus | None = None
    """canary is the rollout in progress, if any."""
    last_rollout: RolloutResult | None = None
    """lastRollout is how the last canary rollout ended."""
    rejected: Annotated[list[RejectedModel], Field(max_length=10)] | None = None
    """rejected models of this generation (the newest ten), which are not rolled out again."""
    batch: BatchStatus | None = None
    """batch is the last batch scoring run (spec.batch)."""


MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    summary=ConditionType.READY,
    condition_types=(
        ConditionType.READY,
        ConditionType.PROGRESSING,
        ConditionType.DEGRADED,
        ConditionType.BATCH_SCORED,
    ),
    reasons=(
        Reason.WAITING_FOR_TRAINING_JOB,
        Reason.TRAINING_JOB_FAILED,
        Reason.GATE_NOT_PASSED,
        Reason.MODEL_LOADING,
        Reason.MODEL_SERVING,
        Reason.ROLLING_OUT,
        Reason.ROLLOUT_COMPLETE,
        Reason.ROLLOUT_STUCK,
        Reason.HEALTHY,
        Reason.SCALED_TO_ZERO,
        Reason.WAITING_FOR_ENDPOINTS,
        Reason.CANARY_PROGRESSING,
        Reason.PROMOTING,
        Reason.PROMOTED,
        Reason.ROLLED_BACK,
        Reason.MODEL_REJECTED,
        Reason.WAITING_FOR_MODEL,
        Reason.WAITING_FOR_DATASET,
        Reason.DATASET_VERSION_NOT_FOUND,
        Reason.SCORING,
        Reason.SCORED,
        Reason.SCORING_FAILED,
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="modeldeployments",
    short_names=("mdep",),
    description="A ModelDeployment serves a model over HTTP (Open Inference Protocol V2) "
    "with readiness meaning the model was loaded and answered a test prediction.",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    columns=(
        condition_column("Ready"),
        Printer("Model", "string", ".status.model.sha256", "sha256 of the served model."),
        Printer("Replicas", "integer", ".status.readyReplicas", "Ready replicas serving the model."),
        Printer("Canary", "integer", ".status.canary.weight", "Canary weight in percent."),
        Printer("URL", "string", ".status.url", "URL of the service.", priority=1),
        Printer("Batch", "string", ".status.batch.state", "State of the last batch scoring run.", priority=1),
        AGE,
    ),
    # The name becomes the Service's name, which must be a DNS-1035 label.
    root_rules=(
        {
            "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
            " && size(self.metadata.name) <= 52",
            "message": "metadata.name must start with a letter, hold only a-z, 0-9 and '-', "
            "and be at most 52 characters (it names the Service)",
        },
    ),
)
