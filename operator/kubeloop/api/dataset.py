"""Dataset: where data comes from, what it must look like, and the versioned snapshot made of it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubeloop.api.common import (
    AGE,
    ArtifactURI,
    ColumnName,
    Conditions,
    Duration,
    Kind,
    KubeloopModel,
    LocalObjectReference,
    Name,
    Printer,
    ResourceRequirements,
    SecretKeySelector,
    ShortText,
    cel,
    condition_column,
)
from kubeloop.api.conditions import ConditionType, Reason

BuiltinDataset = Literal["iris", "wine", "breast_cancer", "digits", "diabetes"]
SOURCE_KINDS = ("builtin", "url", "s3", "pvc", "configMapRef")


class S3Source(KubeloopModel):
    """An object in an S3-compatible store."""

    uri: Annotated[str, Field(max_length=2048, pattern=r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]/.+$")]
    """uri of the object, s3://bucket/key."""
    endpoint: Annotated[str, Field(max_length=2048, pattern=r"^https?://.+$")] | None = None
    """endpoint of the S3-compatible server; AWS when absent."""
    credentials_secret_ref: LocalObjectReference | None = None
    """credentialsSecretRef names a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, mounted read-
    only."""


class PVCSource(KubeloopModel):
    """A file on a PersistentVolumeClaim in the same namespace."""

    model_config = cel(
        (
            "!self.path.split('/').exists(s, s == '..')",
            "path must stay inside the volume: no '..' segments",
        )
    )

    claim_name: Name
    """claimName of the PersistentVolumeClaim, mounted read-only into the ingest pod."""
    path: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^/].*$")]
    """path of the file, relative to the root of the volume."""


class ConfigMapSource(KubeloopModel):
    """Small inline data kept in a ConfigMap."""

    name: Name
    """name of the ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """key of the ConfigMap whose value is the file (e.g. data.csv)."""


class DatasetSource(KubeloopModel):
    """Where the data comes from: exactly one of the fields."""

    model_config = cel(
        (
            "[has(self.builtin), has(self.url), has(self.s3), has(self.pvc), has(self.configMapRef)]"
            ".filter(x, x).size() == 1",
            "exactly one of builtin, url, s3, pvc or configMapRef must be set",
        ),
        ("!has(self.headersSecretRef) || has(self.url)", "headersSecretRef is for a url source only"),
    )

    builtin: BuiltinDataset | None = None
    """builtin names a dataset bundled with scikit-learn."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = None
    """url of a file served over http or https. Its query string, user info and fragment never appear in a
    log, Event or status (credentials live there); headersSecretRef keeps them out of the spec."""
    headers_secret_ref: LocalObjectReference | None = None
    """headersSecretRef names a Secret whose keys are HTTP header names and values their values (e.g. key
    Authorization, value "Bearer ..."), sent with the url request. Mounted read-only into the ingest pod;
    the values never appear in a log, Event or status."""
    s3: S3Source | None = None
    """s3 is an object in an S3-compatible store."""
    pvc: PVCSource | None = None
    """pvc is a file on a PersistentVolumeClaim."""
    config_map_ref: ConfigMapSource | None = None
    """configMapRef is a key of a ConfigMap holding small inline data."""


class Column(KubeloopModel):
    """The expected type and range of one column."""

    model_config = cel(
        (
            "!has(self.minimum) || !has(self.maximum) || self.minimum <= self.maximum",
            "minimum must not be greater than maximum",
        ),
        (
            "!has(self.values) || self.type in ['category', 'string', 'int']",
            "values needs type category, string or int",
        ),
        (
            "(!has(self.minimum) && !has(self.maximum)) || self.type in ['float', 'int']",
            "minimum and maximum need type float or int",
        ),
    )

    name: ColumnName
    """name of the column."""
    type: Literal["float", "int", "category", "string", "bool"]
    """type of the values."""
    nullable: bool = True
    """nullable allows empty values."""
    minimum: float | None = None
    """minimum allowed value (numeric columns)."""
    maximum: float | None = None
    """maximum allowed value (numeric columns)."""
    values: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=1000)] | None = None
    """values lists the allowed values (category, string or int columns)."""


class DatasetSchema(KubeloopModel):
    """What the data must look like; ingest fails with a row- and column-precise message otherwise."""

    model_config = cel(
        (
            "!has(self.columns) || size(self.columns) == 0 || self.columns.exists(c, c.name == self.target)",
            "target must be one of the listed columns",
        )
    )

    target: ColumnName
    """target is the column a model learns to predict."""
    columns: (
        Annotated[
            list[Column],
            Field(
                max_length=500,
                json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            ),
        ]
        | None
    ) = None
    """columns lists the expected columns; columns not listed are kept without checks."""


class DatasetValidation(KubeloopModel):
    """Checks on the whole table."""

    min_rows: Annotated[int, Field(ge=0)] = 1
    """minRows is the least number of rows a version must have."""
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0
    """maxNullFraction is the largest share of empty values allowed in any column."""
    duplicates: Literal["keep", "drop", "fail"] = "keep"
    """duplicates says what to do with duplicate rows: keep them, drop them, or fail the ingest."""


class DatasetPrivacy(KubeloopModel):
    """Columns removed or pseudonymised before anything is written to the artifact store."""

    model_config = cel(
        (
            "!has(self.hash) || size(self.hash) == 0 || has(self.hashKeySecretRef)",
            "hashKeySecretRef is required when hash lists columns",
        ),
        (
            "!has(self.hash) || !has(self.drop) || !self.hash.exists(c, c in self.drop)",
            "a column cannot be both dropped and hashed",
        ),
    )

    drop: Annotated[list[ColumnName], Field(max_length=100)] | None = None
    """drop lists columns removed before the snapshot is written."""
    hash: Annotated[list[ColumnName], Field(max_length=100)] | None = None
    """hash lists columns replaced by a keyed hash (HMAC-SHA256) before the snapshot is written."""
    hash_key_secret_ref: SecretKeySelector | None = None
    """hashKeySecretRef is the Secret key holding the hash key; it is mounted as a file, never logged."""


class DatasetSpec(KubeloopModel):
    """The desired Dataset."""

    source: DatasetSource
    """source is where the data comes from."""
    format: Literal["csv", "parquet"] | None = None
    """format of the file; inferred from its name when absent (builtin datasets need none)."""
    data_schema: DatasetSchema | None = Field(default=None, alias="schema")
    """schema is what the data must look like."""
    validation: DatasetValidation | None = None
    """validation holds checks on the whole table."""
    privacy: DatasetPrivacy | None = None
    """privacy lists columns to drop or hash before the snapshot is written."""
    refresh_interval: Duration | None = None
    """refreshInterval re-ingests the source this often (e.g. 1h); a new version appears only when the
    content changes."""
    resources: ResourceRequirements | None = None
    """resources of the ingest pod."""


class FeatureSummary(KubeloopModel):
    """A short summary of one column (the full baseline is stored next to the snapshot)."""

    kind: Literal["numeric", "categorical"]
    """kind of the column."""
    nulls: Annotated[int, Field(ge=0)] = 0
    """nulls is the number of empty values."""
    min: float | None = None
    """min is the smallest value (numeric)."""
    max: float | None = None
    """max is the largest value (numeric)."""
    mean: float | None = None
    """mean of the values (numeric)."""
    std: float | None = None
    """std is the standard deviation of the values (numeric)."""
    categories: Annotated[int, Field(ge=0)] | None = None
    """categories is the number of distinct values (categorical)."""


class DatasetVersion(KubeloopModel):
    """One version of the snapshot."""

    version: ShortText
    """version is the first 16 hex characters of the content hash."""
    rows: Annotated[int, Field(ge=0)]
    """rows in this version."""
    artifact_uri: ArtifactURI = Field(alias="artifactURI")
    """artifactURI of the snapshot in the artifact store."""
    ingested_at: ShortText
    """ingestedAt is when the version was first written."""


class IngestRun(KubeloopModel):
    """The ingest Job the operator runs or last ran."""

    job: Name
    """job is the name of the ingest Job."""
    generation: Annotated[int, Field(ge=0)]
    """generation of the Dataset spec this run ingests."""
    refresh: Annotated[int, Field(ge=0)] = 0
    """refresh counts the re-ingests of this generation."""
    state: Literal["Running", "Succeeded", "Failed"]
    """state of the run."""
    completion_time: ShortText | None = None
    """completionTime is when the run finished."""


class DatasetStatus(KubeloopModel):
    """The observed Dataset."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """observedGeneration is the metadata.generation this status describes."""
    conditions: Conditions | None = None
    """conditions: Ready (a validated version is available) and Validated (the last ingest passed
    validation)."""
    version: ShortText | None = None
    """version is the first 16 hex characters of the content hash of the current snapshot."""
    sha256: ShortText | None = None
    """sha256 is the full content hash of the current snapshot."""
    rows: Annotated[int, Field(ge=0)] | None = None
    """rows in the current snapshot."""
    columns: Annotated[int, Field(ge=0)] | None = None
    """columns in the current snapshot."""
    artifact_uri: ArtifactURI | None = Field(default=None, alias="artifactURI")
    """artifactURI of the current snapshot."""
    statistics: Annotated[dict[str, FeatureSummary], Field(max_length=500)] | None = None
    """statistics summarises each column of the current snapshot."""
    history: Annotated[list[DatasetVersion], Field(max_length=10)] | None = None
    """history lists recent versions, newest first."""
    ingest: IngestRun | None = None
    """ingest is the current or last ingest run."""


DATASET = Kind(
    kind="Dataset",
    summary=ConditionType.READY,
    condition_types=(ConditionType.READY, ConditionType.VALIDATED),
    reasons=(
        Reason.INGESTING,
        Reason.INGESTED,
        Reason.INGEST_FAILED,
        Reason.INVALID_RESULT,
        Reason.JOB_FAILED,
        Reason.NO_RESULT,
        Reason.OUT_OF_MEMORY,
        Reason.INVALID_SPEC,
        Reason.RECONCILE_ERROR,
        Reason.STATUS_REJECTED,
    ),
    plural="datasets",
    short_names=("dset",),
    description="A Dataset says where data comes from and what it must look like; "
    "the operator ingests it into a versioned, validated snapshot with baseline statistics.",
    spec=DatasetSpec,
    status=DatasetStatus,
    columns=(
        condition_column("Ready"),
        Printer("Version", "string", ".status.version", "Content hash of the current snapshot."),
        Printer("Rows", "integer", ".status.rows", "Rows in the current snapshot."),
        Printer("Source", "string", ".spec.source", "Where the data comes from.", priority=1),
        AGE,
    ),
)
