"""Condition types and reasons: the words a user (and a machine) reads in ``status.conditions``.

Each kind lists the types it sets and the reasons the operator gives; the CRD generator writes both into
the description of ``status.conditions``, so ``kubectl explain <kind>.status.conditions`` shows them.
Reasons that come from a pod's result (a data error found by ingest or training, e.g. ``TooManyNulls``)
are the runtime's words and pass through as they are (docs/contracts.md lists them).
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    VALIDATED = "Validated"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    GATE_PASSED = "GatePassed"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    DRIFTED = "Drifted"
    SLO_VIOLATED = "SLOViolated"
    BATCH_SCORED = "BatchScored"


CONDITION_TYPES: dict[ConditionType, str] = {
    ConditionType.READY: "the object does its job now (a version is available, a pod serves the model, ...)",
    ConditionType.VALIDATED: "the last ingest passed the schema and validation rules",
    ConditionType.SUCCEEDED: "the run produced a model (True), failed (False) or is still going (Unknown)",
    ConditionType.FAILED: "the run failed and will not be retried for this generation",
    ConditionType.GATE_PASSED: "the model meets the quality gate",
    ConditionType.PROGRESSING: "a rollout of a new model is under way",
    ConditionType.DEGRADED: "pods cannot serve the wanted model, or the rollout is stuck",
    ConditionType.DRIFTED: "the inputs drifted from the training baseline",
    ConditionType.SLO_VIOLATED: "error rate or latency breach the objectives",
    ConditionType.BATCH_SCORED: "spec.batch's last run scored every row (True), failed (False), "
    "or runs or waits (Unknown)",
}


class Reason(StrEnum):
    # Any kind.
    INVALID_SPEC = "InvalidSpec"
    RECONCILE_ERROR = "ReconcileError"
    STATUS_REJECTED = "StatusRejected"
    INVALID_RESULT = "InvalidResult"
    JOB_FAILED = "JobFailed"
    NO_RESULT = "NoResult"
    OUT_OF_MEMORY = "OutOfMemory"
    # Dataset.
    INGESTING = "Ingesting"
    INGESTED = "Ingested"
    INGEST_FAILED = "IngestFailed"
    NEW_VERSION = "NewVersion"
    # TrainingJob.
    WAITING_FOR_DATASET = "WaitingForDataset"
    DATASET_VERSION_NOT_FOUND = "DatasetVersionNotFound"
    ESTIMATOR_NOT_ALLOWED = "EstimatorNotAllowed"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    MEMORY_TOO_SMALL = "MemoryTooSmall"
    INVALID_SEARCH = "InvalidSearch"
    TRAINING = "Training"
    TRAINED = "Trained"
    TRAINING_FAILED = "TrainingFailed"
    OBJECTIVE_MISSING = "ObjectiveMissing"
    GATE_MET = "GateMet"
    GATE_MISSED = "GateMissed"
    # ModelDeployment.
    WAITING_FOR_TRAINING_JOB = "WaitingForTrainingJob"
    TRAINING_JOB_FAILED = "TrainingJobFailed"
    GATE_NOT_PASSED = "GateNotPassed"
    MODEL_LOADING = "ModelLoading"
    MODEL_SERVING = "ModelServing"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    ROLLOUT_STUCK = "RolloutStuck"
    HEALTHY = "Healthy"
    SCALED_TO_ZERO = "ScaledToZero"
    WAITING_FOR_ENDPOINTS = "WaitingForEndpoints"
    CANARY_PROGRESSING = "CanaryProgressing"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    MODEL_REJECTED = "ModelRejected"
    # ModelDeployment batch scoring (the BatchScored condition).
    WAITING_FOR_MODEL = "WaitingForModel"
    SCORING = "Scoring"
    SCORED = "Scored"
    SCORING_FAILED = "ScoringFailed"
    # Monitor.
    WAITING_FOR_MODEL_DEPLOYMENT = "WaitingForModelDeployment"
    WATCHING = "Watching"
    NOT_CHECKED = "NotChecked"
    CHECKED = "Checked"
    WITHIN_OBJECTIVES = "WithinObjectives"
    OBJECTIVE_MISSED = "ObjectiveMissed"
    NO_DRIFT = "NoDrift"
    DRIFT_DETECTED = "DriftDetected"
    NOT_ENOUGH_TRAFFIC = "NotEnoughTraffic"
    NO_BASELINE = "NoBaseline"
    NO_PODS = "NoPods"
    METRICS_UNAVAILABLE = "MetricsUnavailable"


REASONS: dict[Reason, str] = {
    Reason.INVALID_SPEC: "the spec cannot work as written; the message says which field to fix",
    Reason.RECONCILE_ERROR: "the operator failed to reconcile the object (an API error); it retries",
    Reason.STATUS_REJECTED: "the API server refused the status the operator computed; the message says why",
    Reason.INVALID_RESULT: "a pod reported a result the operator cannot use",
    Reason.JOB_FAILED: "a Job failed without a reason of its own",
    Reason.NO_RESULT: "a pod exited without writing its JSON result",
    Reason.OUT_OF_MEMORY: "a pod was killed for going over its memory limit (OOMKilled)",
    Reason.INGESTING: "the ingest Job is running",
    Reason.INGESTED: "a validated version is available",
    Reason.INGEST_FAILED: "the ingest Job failed before any version existed",
    Reason.NEW_VERSION: "(Event) a new dataset version was recorded",
    Reason.WAITING_FOR_DATASET: "the Dataset does not exist or has no version yet",
    Reason.DATASET_VERSION_NOT_FOUND: "the pinned version is not in the Dataset's history",
    Reason.ESTIMATOR_NOT_ALLOWED: "the estimator is not in the operator's allow-list",
    Reason.MEMORY_TOO_SMALL: "the trial pods' memory limit cannot hold the Dataset (a lower bound, measured)",
    Reason.IMAGE_NOT_ALLOWED: "spec.image is not in the operator's allow-list of training images",
    Reason.INVALID_SEARCH: "the search space cannot be expanded into trials",
    Reason.TRAINING: "trials are running",
    Reason.TRAINED: "the run produced a model",
    Reason.TRAINING_FAILED: "every trial failed",
    Reason.OBJECTIVE_MISSING: "no trial reported the search objective",
    Reason.GATE_MET: "every gate threshold is met",
    Reason.GATE_MISSED: "a gate threshold is missed",
    Reason.WAITING_FOR_TRAINING_JOB: "no TrainingJob has produced a model to serve yet",
    Reason.TRAINING_JOB_FAILED: "the referenced TrainingJob failed",
    Reason.GATE_NOT_PASSED: "the referenced TrainingJob's model missed its gate",
    Reason.MODEL_LOADING: "pods are loading and self-testing the model",
    Reason.MODEL_SERVING: "every replica serves the wanted model",
    Reason.ROLLING_OUT: "a new model is rolling out",
    Reason.ROLLOUT_COMPLETE: "the rollout finished",
    Reason.ROLLOUT_STUCK: "the Deployment exceeded its progress deadline",
    Reason.HEALTHY: "no pod reports a problem",
    Reason.SCALED_TO_ZERO: "replicas is 0: nothing serves, by request",
    Reason.WAITING_FOR_ENDPOINTS: "the pods are ready, the Service's EndpointSlices do not list them yet",
    Reason.CANARY_PROGRESSING: "a canary of the new model runs beside the stable one and is analysed",
    Reason.PROMOTING: "the canary passed; the stable Deployment takes its model",
    Reason.PROMOTED: "the canary's model is now the stable one",
    Reason.ROLLED_BACK: "the canary failed a check, was aborted or missed its deadline; the stable serves",
    Reason.MODEL_REJECTED: "the wanted model was rolled back under this generation; change the spec to retry",
    Reason.WAITING_FOR_MODEL: "no model is served yet; batch scoring uses exactly the served model",
    Reason.SCORING: "the batch scoring Job is running",
    Reason.SCORED: "every shard succeeded and the output manifest is written",
    Reason.SCORING_FAILED: "the batch scoring Job failed; the message says which shard and why",
    Reason.WAITING_FOR_MODEL_DEPLOYMENT: "the ModelDeployment does not exist yet",
    Reason.WATCHING: "the ModelDeployment exists",
    Reason.NOT_CHECKED: "no check has run yet",
    Reason.CHECKED: "the checks ran at the last interval",
    Reason.WITHIN_OBJECTIVES: "error rate and latency met the objectives over the window",
    Reason.OBJECTIVE_MISSED: "error rate or latency missed an objective over the window",
    Reason.NO_DRIFT: "every feature is within the drift threshold",
    Reason.DRIFT_DETECTED: "a feature drifted from the training baseline; the message names the worst",
    Reason.NOT_ENOUGH_TRAFFIC: "too few requests or values in the window for a verdict",
    Reason.NO_BASELINE: "the served model has no training baseline, so drift cannot be judged",
    Reason.NO_PODS: "no ready pod serves the ModelDeployment's model, so nothing can be measured",
    Reason.METRICS_UNAVAILABLE: "the metrics source (Prometheus) did not answer; the message says how",
}


def describe(types: tuple[ConditionType, ...], reasons: tuple[Reason, ...]) -> str:
    """The text appended to a kind's status.conditions description."""
    said_types = "; ".join(f"{t.value}: {CONDITION_TYPES[t]}" for t in types)
    said_reasons = "; ".join(f"{r.value}: {REASONS[r]}" for r in reasons)
    return f" Types — {said_types}. Reasons — {said_reasons}."
