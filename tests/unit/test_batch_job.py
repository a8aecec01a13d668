"""Batch scoring on the operator's side: the Indexed Job a ModelDeployment's spec.batch makes, and how the
controller reads a run from the Job and its pods (kubeloop.builders.batch, kubeloop.controllers.batch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubeloop.api import MODEL_DEPLOYMENT
from kubeloop.api.modeldeployment import Batch, ModelDeploymentSpec
from kubeloop.builders.batch import output_uri, run_key, score_job, score_job_name
from kubeloop.builders.settings import Settings
from kubeloop.contract import COMPLETION_INDEX_ANNOTATION, EXIT_DATA_ERROR
from kubeloop.controllers.batch import Outcome, needs, outcome, record
from kubeloop.controllers.framework import status_model
from kubeloop.controllers.modeldeployment import needs as deployment_needs

SHA = "b" * 64
SETTINGS = Settings(
    trainer_image="registry.local/trainer:1", store_uri="s3://bucket/kl", store_secret="creds"
)
DATASET = {
    "name": "iris",
    "version": "0123456789abcdef",
    "artifactURI": "s3://bucket/kl/datasets/ml/iris/0123/manifest.json",
}
MODEL = {"uri": f"s3://bucket/kl/models/{SHA}", "sha256": SHA}


def batch(**fields: Any) -> Batch:
    return Batch.model_validate({"datasetRef": {"name": "iris"}, **fields})


def build(b: Batch, name: str = "iris") -> dict[str, Any]:
    key = run_key(DATASET["version"], SHA, b)
    return score_job(
        name=name, namespace="ml", batch=b, dataset=DATASET, model=MODEL, key=key, settings=SETTINGS
    )


@pytest.mark.parametrize(
    ("fields", "completions", "parallelism", "per_index"),
    [
        ({}, 1, 1, 2),
        ({"shards": 4}, 4, 4, 2),
        ({"shards": 8, "parallelism": 2, "backoffLimitPerIndex": 0}, 8, 2, 0),
    ],
)
def test_the_job_is_indexed_one_index_per_shard_with_per_index_retries(
    fields: dict[str, Any], completions: int, parallelism: int, per_index: int
) -> None:
    spec = build(batch(**fields))["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (
        completions,
        parallelism,
        per_index,
    )
    assert "backoffLimit" not in spec  # the per-index limit bounds the retries
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "score", "operator": "In", "values": [EXIT_DATA_ERROR]},
    }
    assert rules[1]["action"] == "Ignore"  # evictions and drains are not the shard's fault


def test_the_pod_is_restricted_and_runs_the_runtime_score_on_the_served_digest() -> None:
    job = build(batch(shards=2, resources={"limits": {"cpu": "1", "memory": "2Gi"}}))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["command"] == ["python", "-m", "kubeloop.runtime"] and container["args"] == ["score"]
    assert container["image"] == "registry.local/trainer:1"
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "2Gi"}}
    assert container["envFrom"] == [{"secretRef": {"name": "creds", "optional": True}}]
    config = json.loads(next(e["value"] for e in container["env"] if e["name"] == "KUBELOOP_CONFIG"))
    assert config["model"] == MODEL and config["dataset"] == DATASET and config["shards"] == 2
    assert config["job"] == job["metadata"]["name"]
    assert config["output"] == f"scores/ml/iris/{DATASET['version']}-{SHA[:16]}"
    labels = job["metadata"]["labels"]
    assert (
        labels["kubeloop.io/modeldeployment"] == "iris" and labels["app.kubernetes.io/component"] == "score"
    )
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_a_run_is_its_version_model_and_batch_spec() -> None:
    key = run_key(DATASET["version"], SHA, batch())
    assert run_key(DATASET["version"], SHA, batch()) == key  # the same run after an operator restart
    assert run_key("f" * 16, SHA, batch()) != key
    assert run_key(DATASET["version"], "c" * 64, batch()) != key
    assert run_key(DATASET["version"], SHA, batch(shards=2)) != key
    assert score_job_name("iris", key) == f"iris-score-{key}"
    long = score_job_name("x" * 200, key)
    assert len(long) <= 60 and long.endswith(f"-score-{key}")  # "<job>-<index>" must stay a hostname
    assert output_uri(SETTINGS, "ml", "iris", DATASET["version"], SHA) == (
        f"s3://bucket/kl/scores/ml/iris/{DATASET['version']}-{SHA[:16]}/manifest.json"
    )


def test_a_new_dataset_version_reconciles_the_deployment() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": MODEL["uri"], "sha256": SHA}, "batch": {"datasetRef": {"name": "iris"}}}
    ).wire()
    assert needs(spec) == [("Dataset", "iris")]
    assert ("Dataset", "iris") in deployment_needs(spec)
    assert needs({"model": {}}) == []


def pod(index: int, phase: str, result: dict[str, Any] | None, created: str = "01") -> dict[str, Any]:
    terminated = (
        {"exitCode": 0 if phase == "Succeeded" else 1, "message": json.dumps(result)} if result else None
    )
    return {
        "metadata": {
            "name": f"p{index}-{created}",
            "creationTimestamp": f"2026-12-01T10:{created}:00Z",
            "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"state": {"terminated": terminated} if terminated else {}}],
        },
    }


def job(condition: str | None = None, **status: Any) -> dict[str, Any]:
    conditions = [
        {
            "type": condition,
            "status": "True",
            "reason": status.pop("reason", ""),
            "message": status.pop("message", ""),
        }
    ]
    return {"status": {**status, "conditions": conditions if condition else []}}


def test_a_running_job_counts_finished_shards_and_says_which_is_retried() -> None:
    pods = [
        pod(0, "Succeeded", {"ok": True, "rows": 700, "complete": False}),
        pod(1, "Failed", {"ok": False, "reason": "InternalError", "message": "OSError: disk full"}, "02"),
        pod(1, "Running", None, "03"),
    ]
    got = outcome(job(), pods, 2)
    assert (got.state, got.succeeded, got.rows, got.reason) == ("Running", 1, 700, "Scoring")
    assert got.message == (
        "1 of 2 shard(s) done, 700 rows scored so far; 1 pod(s) failed and their shards are retried "
        "(index 1: OSError: disk full)"
    )


def test_a_complete_job_reports_every_row_from_the_index_that_wrote_the_manifest() -> None:
    pods = [
        pod(0, "Succeeded", {"ok": True, "rows": 1300, "complete": True, "totalRows": 2000}),
        pod(1, "Succeeded", {"ok": True, "rows": 700, "complete": False}),
    ]
    got = outcome(job("Complete"), pods, 2)
    assert (got.state, got.succeeded, got.rows, got.reason) == ("Succeeded", 2, 2000, "Scored")


def test_a_complete_job_without_a_manifest_is_never_called_scored() -> None:
    pods = [pod(0, "Succeeded", {"ok": True, "rows": 10, "complete": False})]
    got = outcome(job("Complete"), pods, 1)
    assert got.state == "Failed" and got.reason == "InvalidResult"
    assert "no pod's result says it wrote the output manifest" in got.message


def test_a_failed_job_names_the_shard_and_the_runtime_s_reason() -> None:
    said = "the snapshot has no column(s) ['f0'] that the model takes; it has ['f1']"
    pods = [
        pod(0, "Succeeded", {"ok": True, "rows": 5, "complete": False}),
        pod(1, "Failed", {"ok": False, "reason": "MissingFeature", "message": said}, "02"),
    ]
    got = outcome(job("Failed", reason="PodFailurePolicy", failedIndexes="1"), pods, 2)
    assert (got.state, got.reason) == ("Failed", "MissingFeature")
    assert got.message == f"index 1 (failed indexes: 1): {said}"
    deadline = outcome(
        job("Failed", reason="DeadlineExceeded", message="Job was active longer than specified"), [], 2
    )
    assert (deadline.reason, deadline.message) == ("DeadlineExceeded", "Job was active longer than specified")


@pytest.mark.parametrize(
    ("result", "condition"),
    [
        (Outcome("Running", 1, 700, "Scoring", "1 of 2 shard(s) done, 700 rows scored so far"), "Unknown"),
        (Outcome("Succeeded", 2, 2000, "Scored", ""), "True"),
        (Outcome("Failed", 1, 700, "MissingFeature", "index 1: no column(s) ['f0']"), "False"),
    ],
)
def test_status_batch_is_what_the_api_server_accepts_and_the_condition_says_it(
    result: Outcome, condition: str
) -> None:
    output = output_uri(SETTINGS, "ml", "iris", DATASET["version"], SHA)
    fields, (status, reason, message) = record(
        "iris-score-0123456789",
        DATASET,
        MODEL,
        2,
        output,
        "2026-12-01T10:00:00Z",
        result,
        "2026-12-01T10:05:00Z",
    )
    # The framework validates the whole status with the kind's model before it writes: the same here.
    stored = status_model(MODEL_DEPLOYMENT, {}, {"batch": fields}).model_dump(
        by_alias=True, exclude_none=True
    )
    assert stored["batch"] == fields
    assert fields["inputURI"] == DATASET["artifactURI"] and fields["outputURI"] == output
    assert (fields["state"], fields["rows"], fields["succeededShards"]) == (
        result.state,
        result.rows,
        result.succeeded,
    )
    assert ("completionTime" in fields) is (result.state != "Running")
    assert (status, reason) == (condition, result.reason)
    if result.state == "Succeeded":
        what = f"Dataset iris version {DATASET['version']} with model {SHA[:12]}"
        assert message == f"scored 2000 rows of {what} into {output}"
    else:
        assert result.message in message and "Job iris-score-0123456789" in message
