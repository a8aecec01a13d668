"""The batch scoring Job of a ModelDeployment: an Indexed Job, one index per shard of the snapshot."""

from __future__ import annotations

import hashlib
import json

from kubeloop.api.modeldeployment import Batch
from kubeloop.builders.common import (
    RUNTIME_COMMAND,
    Manifest,
    Mounts,
    config_env,
    job,
    resources,
    store_env_from,
)
from kubeloop.builders.settings import Settings
from kubeloop.contract import SCORES_MARKER, child_labels, child_name, scores_prefix

SCORE_CONTAINER = "score"
SCORE_COMPONENT = "score"
DEFAULT_RESOURCES: Manifest = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
# A pod of an Indexed Job is named and its hostname set "<job>-<index>-..."; a hostname has at most 63
# characters, so the Job's name leaves room for an index of up to 99 and its dash.
MAX_JOB_NAME = 60


def run_key(dataset_version: str, model_sha256: str, batch: Batch) -> str:
    """What makes a run: the version, the model and the batch spec. The same key is the same run, so a
    reconcile (or a restarted operator) finds its Job instead of scoring again. Pure."""
    doc = {"dataset": dataset_version, "model": model_sha256, "batch": batch.wire()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]


def score_job_name(deployment: str, key: str) -> str:
    name = child_name(deployment, "score", key)
    if len(name) <= MAX_JOB_NAME:
        return name
    # child_name cut it to 63: cut the head further, keeping the key that tells runs apart.
    return f"{name[: MAX_JOB_NAME - len(key) - 7].rstrip('-.')}-score-{key}"


def output_uri(settings: Settings, namespace: str, deployment: str, version: str, sha256: str) -> str:
    """The output manifest's URI (status.batch.outputURI)."""
    prefix = scores_prefix(namespace, deployment, version, sha256)
    return f"{settings.store_uri.rstrip('/')}/{prefix}/{SCORES_MARKER}"


def score_job(
    *,
    name: str,
    namespace: str,
    batch: Batch,
    dataset: dict[str, str],
    model: dict[str, str],
    key: str,
    settings: Settings,
) -> Manifest:
    """The Indexed Job (python -m kubeloop.runtime score) scoring ``dataset`` ({name, version,
    artifactURI}) with ``model`` ({uri, sha256}): completions = shards, one pod per index, each scoring
    the parts the shard assignment gives it (kubeloop.runtime.score.assign, the same in every pod)."""
    mounts = Mounts()
    mounts.store(settings.store_uri)
    job_name = score_job_name(name, key)
    config: Manifest = {
        "namespace": namespace,
        "name": name,
        "job": job_name,
        "storeURI": settings.store_uri,
        "dataset": dataset,
        "model": {"uri": model["uri"], "sha256": model["sha256"]},
        "output": scores_prefix(namespace, name, dataset["version"], model["sha256"]),
        "shards": batch.shards,
    }
    container: Manifest = {
        "name": SCORE_CONTAINER,
        "image": settings.trainer_image,  # pyarrow and ONNX Runtime; the server image has no pyarrow
        "imagePullPolicy": settings.image_pull_policy,
        "command": RUNTIME_COMMAND,
        "args": ["score"],
        "env": [config_env(config)],
        "envFrom": store_env_from(settings),
        "resources": resources(batch.resources, DEFAULT_RESOURCES),
    }
    manifest = job(
        name=job_name,
        namespace=namespace,
        labels=child_labels("ModelDeployment", name, SCORE_COMPONENT),
        container=container,
        mounts=mounts,
        backoff_limit=0,
        active_deadline_seconds=batch.active_deadline_seconds,
    )
    spec = manifest["spec"]
    # Retries are counted per index: one shard's bad luck does not use up the others' retries. The Job's
    # own backoffLimit then defaults to "unlimited" (the per-index limit bounds it).
    del spec["backoffLimit"]
    spec.update(
        completionMode="Indexed",
        completions=batch.shards,
        parallelism=batch.parallelism or batch.shards,
        backoffLimitPerIndex=batch.backoff_limit_per_index,
    )
    # The shared podFailurePolicy stays: a data error (exit 2) in any shard means the output can never be
    # complete, so it fails the whole Job at once (FailJob); a disruption is retried without counting.
    return manifest
