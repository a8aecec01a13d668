"""TrainingJob: one training run (or one hyperparameter search) producing one model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kubeloop.api.common import (
    AGE,
    ArtifactURI,
    ColumnName,
    Conditions,
    FreeForm,
    Kind,
    KubeloopModel,
    Name,
    Printer,
    ResourceRequirements,
    ShortText,
    cel,
    condition_column,
)
from kubeloop.api.conditions import ConditionType, Reason

MetricName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class DatasetRef(KubeloopModel):
    """A Dataset in the same namespace, optionally pinned to one version."""

    name: Name
    """name of the Dataset."""
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-f0-9]+$")] | None = None
    """version pins a version from the Dataset's history; the current version when absent."""


class ModelSpec(KubeloopModel):
    """The estimator to fit."""

    estimator: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    """estimator is a name from the operator's allow-list (e.g. LogisticRegression); import paths are
    refused."""
    params: FreeForm | None = None
    """params are the estimator's hyperparameters, passed as keyword arguments (free-form: they depend on the
    estimator)."""
    task: Literal["classification", "regression"] | None = None
    """task is inferred from the target column when absent."""


class Split(KubeloopModel):
    """How rows are split into training and test sets."""

    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """testFraction is the share of rows held out for evaluation."""
    seed: Annotated[int, Field(ge=0)] = 42
    """seed makes the split (and a random search) reproducible."""
    stratify: bool = True
    """stratify keeps class proportions in both sets (classification only)."""


class Categorical(KubeloopModel):
    """How categorical (string) features are encoded: one-hot, inside the exported ONNX graph.

    Every feature the Dataset's baseline counts by category (types category and string) becomes a string
    input of the model, one-hot encoded by the graph itself, so clients send the raw values (V2 BYTES
    tensors, one per feature); numeric and bool features become float inputs of one column each. A missing
    value is the empty string, a category of its own.
    """

    unknown: Literal["ignore", "error"] = "ignore"
    """unknown says what the model does with a category training never saw: ignore encodes it as no
    category at all (all zeros), error refuses the request (HTTP 400 naming the feature and the value)."""


class SearchParameter(KubeloopModel):
    """One searched hyperparameter: a list of values, or a range (random search only)."""

    # `values` holds arbitrary JSON, so it has no schema type and CEL cannot see it: "values or a range,
    # never both" is an OpenAPI oneOf of required fields; the rules below only read the typed fields.
    model_config = cel(
        ("has(self.min) == has(self.max)", "min and max must be set together"),
        ("!has(self.min) || self.min <= self.max", "min must not be greater than max"),
        (
            "!has(self.log) || !self.log || (has(self.min) && self.min > 0.0)",
            "log needs a range with min > 0",
        ),
        one_of_required=(("values",), ("min", "max")),
    )

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """name of the estimator parameter."""
    values: (
        Annotated[
            list[Any],
            Field(
                min_length=1,
                max_length=100,
                json_schema_extra={"items": {"x-kubernetes-preserve-unknown-fields": True}},
            ),
        ]
        | None
    ) = None
    """values to try (any JSON values, as the estimator takes them)."""
    min: float | None = None
    """min of a range (random search)."""
    max: float | None = None
    """max of a range (random search)."""
    integer: bool = False
    """integer draws whole numbers from the range."""
    log: bool = False
    """log draws from the range on a log scale."""


class Objective(KubeloopModel):
    """What the search optimises."""

    metric: MetricName
    """metric to optimise, e.g. accuracy, f1_macro, r2, rmse."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """direction of better."""


class Search(KubeloopModel):
    """A hyperparameter search: each trial runs as its own pod; the best trial's model is the result."""

    model_config = cel(
        ("self.parallelism <= self.maxTrials", "parallelism must not exceed maxTrials"),
        (
            "self.strategy == 'random' || self.parameters.all(p, !has(p.min))",
            "grid search needs values for every parameter; ranges (min, max) need strategy random",
        ),
    )

    strategy: Literal["grid", "random"] = "grid"
    """strategy: grid tries every combination (up to maxTrials), random draws maxTrials combinations."""
    parameters: Annotated[
        list[SearchParameter],
        Field(
            min_length=1,
            max_length=20,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ]
    """parameters to search."""
    max_trials: Annotated[int, Field(ge=1, le=100)] = 10
    """maxTrials is the most trials to run."""
    parallelism: Annotated[int, Field(ge=1, le=20)] = 1
    """parallelism is how many trials run at once."""
    objective: Objective
    """objective picks the best trial."""


class ModelDeploymentRef(KubeloopModel):
    """A ModelDeployment in the same namespace."""

    name: Name
    """name of the ModelDeployment."""


class NoWorseThan(KubeloopModel):
    """Compare with the model a ModelDeployment serves now: the new model must be no worse on each metric.

    The operator reads the digest the ModelDeployment serves (status.model.sha256), finds the TrainingJob
    in this namespace that produced it (status.model.sha256) and uses that run's metrics. When nothing is
    served yet (or the served model's metrics are unknown) the run trains anyway, the comparison is skipped
    and the GatePassed condition says why.
    """

    model_deployment_ref: ModelDeploymentRef
    """modelDeploymentRef is the ModelDeployment whose serving model is the bar to meet."""
    metrics: (
        Annotated[
            list[MetricName],
            Field(min_length=1, max_length=20, json_schema_extra={"x-kubernetes-list-type": "set"}),
        ]
        | None
    ) = None
    """metrics to compare; when absent, the search objective's metric, or else every metric the minimums
    and maximums name. "No worse" means greater or equal, or less or equal for rmse and mae."""
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """tolerance is how much worse than the serving model (absolute, in the metric's units) still passes,
    e.g. 0.01 lets accuracy drop from 0.95 to 0.94."""


class Gate(KubeloopModel):
    """A quality gate: a model that misses it is never deployed."""

    minimums: Annotated[dict[MetricName, float], Field(max_length=20)] | None = None
    """minimums maps a metric to its lowest acceptable value, e.g. accuracy: 0.9."""
    maximums: Annotated[dict[MetricName, float], Field(max_length=20)] | None = None
    """maximums maps a metric to its highest acceptable value, e.g. rmse: 10."""
    no_worse_than: NoWorseThan | None = None
    """noWorseThan also requires the model to be no worse than the one a ModelDeployment serves now."""


class TrainingJobSpec(KubeloopModel):
    """The desired training run."""

    model_config = cel(
        (
            "!has(self.gate) || !has(self.gate.noWorseThan) || has(self.gate.noWorseThan.metrics)"
            " || has(self.search) || (has(self.gate.minimums) && size(self.gate.minimums) > 0)"
            " || (has(self.gate.maximums) && size(self.gate.maximums) > 0)",
            "gate.noWorseThan needs metrics when there is no search objective and no minimums or maximums",
        ),
    )

    dataset_ref: DatasetRef
    """datasetRef is the Dataset to train on; the run waits until it has a ready version."""
    model: ModelSpec
    """model is the estimator to fit."""
    features: Annotated[list[ColumnName], Field(min_length=1, max_length=500)] | None = None
    """features to use; every column but the target when absent."""
    split: Split | None = None
    """split of rows into training and test sets."""
    sample_rows: Annotated[int, Field(ge=10, le=1_000_000_000)] | None = None
    """sampleRows trains and tests on at most this many rows of the snapshot: a sample drawn with the split's
    seed, stratified by the target for classification, before the split. For snapshots larger than the pod
    should fit on (the sample is taken before the rows become a DataFrame); recorded in status.model.sample
    and the model card. Every row when absent."""
    categorical: Categorical | None = None
    """categorical sets how categorical features are encoded (unknown categories: ignore when absent)."""
    search: Search | None = None
    """search runs a hyperparameter search instead of one fit."""
    gate: Gate | None = None
    """gate holds the metric thresholds the model must meet to be deployable."""
    resources: ResourceRequirements | None = None
    """resources of each training pod."""
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 2
    """backoffLimit is how many times an infrastructure failure is retried (data and code errors fail at
    once)."""
    active_deadline_seconds: Annotated[int, Field(ge=1, le=604800)] = 3600
    """activeDeadlineSeconds bounds the run time of each training Job."""
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")] | None = None
    """image overrides the trainer image with custom code that follows the runtime contract (config in
    KUBELOOP_CONFIG, result in /dev/termination-log). Off unless the operator's admin allows the image's
    repository or prefix (Helm value operator.allowedTrainingImages); otherwise the run fails with reason
    ImageNotAllowed. An allowed image runs with the store's credentials, as the trainer does: it is trusted
    code."""


class InputColumn(KubeloopModel):
    """One input of the model."""

    name: ColumnName
    """name of the feature."""
    type: Annotated[str, Field(max_length=64)]
    """type of the input: float (sent as FP32) or string (a categorical feature, sent as BYTES)."""


class Sample(KubeloopModel):
    """The rows a model was trained and tested on, when spec.sampleRows took a sample of the snapshot."""

    rows: Annotated[int, Field(ge=0)]
    """rows in the sample."""
    of: Annotated[int, Field(ge=0)]
    """of is the snapshot's row count."""
    seed: int
    """seed the sample was drawn with (the split's)."""
    stratified: bool
    """stratified says whether each class kept its share of the rows."""


class TrainedModel(KubeloopModel):
    """The model a run produced, and where it came from."""

    uri: ArtifactURI
    """uri of the model directory in the artifact store."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]
    """sha256 of model.onnx."""
    dataset_version: Annotated[str, Field(max_length=64)] | None = None
    """datasetVersion the model was trained on."""
    task: Literal["classification", "regression"] | None = None
    """task the model solves."""
    params: FreeForm | None = None
    """params the estimator was fitted with."""
    input_signature: Annotated[list[InputColumn], Field(max_length=500)] | None = None
    """inputSignature lists the model's inputs."""
    library_versions: (
        Annotated[dict[str, Annotated[str, Field(max_length=64)]], Field(max_length=20)] | None
    ) = None
    """libraryVersions of scikit-learn, skl2onnx, onnx and friends used to build the model."""
    report_uri: ArtifactURI | None = Field(default=None, alias="reportURI")
    """reportURI of the model report (self-contained HTML: metrics, charts, trials, data, lineage)."""
    sample: Sample | None = None
    """sample the model was trained on (spec.sampleRows); absent when it saw every row."""


class Trial(KubeloopModel):
    """One trial of a search (or the single run)."""

    index: Annotated[int, Field(ge=0)]
    """index of the trial."""
    job: Name
    """job that runs the trial."""
    params: FreeForm | None = None
    """params of the trial."""
    state: Literal["Pending", "Running", "Succeeded", "Failed"]
    """state of the trial."""
    metrics: Annotated[dict[str, float], Field(max_length=50)] | None = None
    """metrics of the trial on the test set."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    """message says why a trial failed."""


class DatasetUsed(KubeloopModel):
    """The Dataset version a run trains on, resolved when the run starts."""

    name: Name
    """name of the Dataset."""
    version: ShortText
    """version of the Dataset."""
    artifact_uri: ArtifactURI = Field(alias="artifactURI")
    """artifactURI of the snapshot."""


class ServingBaseline(KubeloopModel):
    """The serving model a run is compared with (gate.noWorseThan), resolved when the run starts."""

    model_deployment: Name
    """modelDeployment that was asked what it serves."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")] | None = None
    """sha256 of the model it served; absent when it served nothing."""
    training_job: Name | None = None
    """trainingJob that produced the served model."""
    metrics: Annotated[dict[str, float], Field(max_length=50)] | None = None
    """metrics of the served model that the new model must not be worse than (before tolerance)."""
    message: Annotated[str, Field(max_length=1024)]
    """message says what was compared, or why the comparison was skipped."""


class TrainingJobStatus(KubeloopModel):
    """The observed training run."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Succeeded, Failed and GatePassed."""
    dataset: DatasetUsed | None = None
    """dataset is the Dataset version this run uses."""
    metrics: Annotated[dict[str, float], Field(max_length=50)] | None = None
    """metrics of the model on the test set."""
    model: TrainedModel | None = None
    """model produced by the run."""
    trials: Annotated[list[Trial], Field(max_length=100)] | None = None
    """trials of the run (one without search)."""
    serving_baseline: ServingBaseline | None = None
    """servingBaseline is the serving model this run is compared with (gate.noWorseThan)."""
    best_trial: Annotated[int, Field(ge=0)] | None = None
    """bestTrial is the index of the trial whose model is the result."""
    start_time: ShortText | None = None
    """startTime is when the first training Job was created."""
    completion_time: ShortText | None = None
    """completionTime is when the run finished."""


TRAINING_JOB = Kind(
    kind="TrainingJob",
    summary=ConditionType.SUCCEEDED,
    condition_types=(ConditionType.SUCCEEDED, ConditionType.FAILED, ConditionType.GATE_PASSED),
    reasons=(
        Reason.WAITING_FOR_DATASET,
        Reason.DATASET_VERSION_NOT_FOUND,
        Reason.ESTIMATOR_NOT_ALLOWED,
        Reason.IMAGE_NOT_ALLOWED,
        Reason.MEMORY_TOO_SMALL,
        Reason.INVALID_SEARCH,
        Reason.TRAINING,
        Reason.TRAINED,
        Reason.TRAINING_FAILED,
        Reason.OBJECTIVE_MISSING,
        Reason.INVALID_RESULT,
        Reason.GATE_MET,
        Reason.GATE_MISSED,
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="trainingjobs",
    short_names=("tjob",),
    description="A TrainingJob fits a model on a Dataset (optionally as a hyperparameter search), "
    "exports it to ONNX and checks it against a quality gate.",
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    columns=(
        condition_column("Succeeded"),
        condition_column("GatePassed", "Gate"),
        Printer("Dataset", "string", ".spec.datasetRef.name", "Dataset trained on."),
        Printer("Version", "string", ".status.dataset.version", "Dataset version trained on."),
        Printer("Accuracy", "number", ".status.metrics.accuracy", "Accuracy on the test set."),
        Printer("Model", "string", ".status.model.sha256", "sha256 of the model.", priority=1),
        AGE,
    ),
)
