"""ModelDeployment: a model served online by the ONNX inference server."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubeloop.api.common import (
    AGE,
    ArtifactURI,
    Conditions,
    Duration,
    Kind,
    KubeloopModel,
    LocalObjectReference,
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
    """targetCPUUtilization is the average CPU use, in percent of requests, to scale at."""


class CanaryStep(KubeloopModel):
    """One step of a canary rollout."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """weight is the percentage of replicas that run the new model during this step."""
    pause: Duration = "1m"
    """pause is how long the step lasts before analysis decides to go on."""


class Analysis(KubeloopModel):
    """Limits a canary must stay within to be promoted; it is rolled back otherwise."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxErrorRate is the largest share of failed requests."""
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = Field(default=None, alias="maxP99LatencyMs")
    """maxP99LatencyMs is the largest 99th percentile of request latency, in milliseconds."""
    max_drift: Annotated[float, Field(ge=0)] | None = None
    """maxDrift is the largest drift score of any feature."""
    max_prediction_distance: Annotated[float, Field(ge=0, le=1)] | None = None
    """maxPredictionDistance is the largest distance between canary and stable prediction distributions."""


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
    """strategy: Recreate stops the old pods first, Rolling replaces them gradually, Canary shifts weight
    step by step."""
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=10)] | None = None
    """steps of a canary rollout, weights ascending and at most 100."""
    analysis: Analysis | None = None
    """analysis limits checked at each canary step."""


class Batch(KubeloopModel):
    """Scores a Dataset on a schedule with the same model; predictions are written to the store."""

    dataset_ref: LocalObjectReference
    """datasetRef is the Dataset to score."""
    schedule: Annotated[str, Field(min_length=9, max_length=128)]
    """schedule in cron format, e.g. "0 3 * * *"."""


class Auth(KubeloopModel):
    """Bearer-token authentication of the inference API."""

    token_secret_ref: SecretKeySelector
    """tokenSecretRef is the Secret key holding the accepted tokens, one per line; mounted as a file."""


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
    """batch scores a Dataset on a schedule."""
    auth: Auth | None = None
    """auth requires bearer tokens on the inference API."""


class ServedModel(KubeloopModel):
    """The model the ready pods loaded and self-tested."""

    uri: ArtifactURI
    """uri of the model."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of model.onnx."""
    training_job: Name | None = None
    """trainingJob that produced the model."""


class CanaryStatus(KubeloopModel):
    """Where a canary rollout stands."""

    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of the canary model."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """weight is the percentage of replicas running the canary."""
    step: Annotated[int, Field(ge=0)]
    """step is the index of the current step."""
    verdicts: Annotated[dict[str, ShortText], Field(max_length=20)] | None = None
    """verdicts of the analysis, per check."""


class ModelDeploymentStatus(KubeloopModel):
    """The observed inference service."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Ready (a pod loaded the wanted model and answered a test prediction), Progressing,
    Degraded."""
    url: ShortText | None = None
    """url of the inference service inside the cluster."""
    model: ServedModel | None = None
    """model that is served."""
    wanted_sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")] | None = None
    """wantedSha256 is the digest being rolled out."""
    replicas: Annotated[int, Field(ge=0)] | None = None
    """replicas wanted."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """readyReplicas serving the wanted model."""
    canary: CanaryStatus | None = None
    """canary is the rollout in progress, if any."""


MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    summary=ConditionType.READY,
    condition_types=(ConditionType.READY, ConditionType.PROGRESSING, ConditionType.DEGRADED),
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
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="modeldeployments",
    short_names=("md", "mdep"),
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
