"""Batch scoring of a ModelDeployment (spec.batch): the Indexed Job, status.batch, the BatchScored condition.

A run is one (Dataset version, served model digest, batch spec): its Job is created once, its outcome is
read from the Job and its pods' results, and a finished run stays recorded until one of the three changes.
The served digest is status.model, what the ready pods loaded and self-tested, so the batch scores with
exactly the model that answers online.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.modeldeployment import Batch, ModelDeploymentSpec
from kubeloop.builders.batch import SCORE_COMPONENT, output_uri, run_key, score_job, score_job_name
from kubeloop.contract import COMPLETION_INDEX_ANNOTATION, LABEL_COMPONENT
from kubeloop.controllers.conditions import Status, now
from kubeloop.controllers.errors import Waiting
from kubeloop.controllers.framework import Context
from kubeloop.controllers.jobs import State, job_state, parse_result, prune, reason_word, termination_message
from kubeloop.controllers.kube import Obj
from kubeloop.controllers.trainingjob import resolve_dataset

BATCH = ConditionType.BATCH_SCORED


@dataclass(frozen=True)
class Outcome:
    state: State
    succeeded: int  # indexes that finished
    rows: int  # rows scored: all of them once Succeeded, the finished indexes' while Running
    reason: str
    message: str


def index_of(pod: Obj) -> int | None:
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "")
    return int(raw) if str(raw).isdigit() else None


def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def outcome(job: Obj, pods: list[Obj], shards: int) -> Outcome:
    """Where a scoring Job stands, from its conditions and its pods' results (one JSON result per pod,
    in its termination message). Pure."""
    results: dict[int, dict[str, Any]] = {}
    for pod in pods:
        index = index_of(pod)
        if index is not None and pod_phase(pod) == "Succeeded":
            results[index] = parse_result(termination_message([pod]))
    rows = sum(int(r.get("rows", 0)) for r in results.values() if isinstance(r.get("rows"), int))
    state, job_reason, job_message = job_state(job)
    if state == "Running":
        failed = sorted(
            (p for p in pods if pod_phase(p) == "Failed"),
            key=lambda p: p["metadata"].get("creationTimestamp", ""),
        )
        said = f"{len(results)} of {shards} shard(s) done, {rows} rows scored so far"
        if failed:
            last = failed[-1]
            result = parse_result(termination_message([last]))
            error = str(result.get("message") or (last.get("status") or {}).get("reason") or "no message")
            said += (
                f"; {len(failed)} pod(s) failed and their shards are retried (index {index_of(last)}: "
                f"{error[:300]})"
            )
        return Outcome("Running", len(results), rows, Reason.SCORING, said)
    if state == "Failed":
        failed_pods = [p for p in pods if pod_phase(p) == "Failed"]
        failed_pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
        for pod in failed_pods:
            result = parse_result(termination_message([pod]))
            if result.get("message"):
                indexes = (job.get("status") or {}).get("failedIndexes")
                where = f"index {index_of(pod)}" + (f" (failed indexes: {indexes})" if indexes else "")
                reason = reason_word(str(result.get("reason") or Reason.SCORING_FAILED))
                return Outcome("Failed", len(results), rows, reason, f"{where}: {result['message']}")
        reason = reason_word(job_reason or Reason.SCORING_FAILED)
        return Outcome(
            "Failed", len(results), rows, reason, job_message or "the Job failed without a message"
        )
    final = [r for r in results.values() if r.get("complete") is True and isinstance(r.get("totalRows"), int)]
    if not final:
        # Every index exits 0 only after recording its parts, and the last to record writes the manifest:
        # a Job complete without one broke that contract (or its pods are gone); never call it scored.
        return Outcome(
            "Failed",
            len(results),
            rows,
            Reason.INVALID_RESULT,
            "every shard succeeded, but no pod's result says it wrote the output manifest",
        )
    return Outcome("Succeeded", len(results), int(final[0]["totalRows"]), Reason.SCORED, "")


def reconcile(ctx: Context, spec: ModelDeploymentSpec) -> Obj:
    """The status.batch field to write (None removes it) and the BatchScored condition, for the model that
    serves now (status.model)."""
    batch = spec.batch
    recorded: Obj = dict(ctx.status.get("batch") or {})
    if batch is None:
        ctx.conditions.remove(BATCH)
        return {"batch": None} if recorded else {}
    served = ctx.status.get("model")
    if not served:
        ctx.conditions.set(
            BATCH,
            "Unknown",
            Reason.WAITING_FOR_MODEL,
            "no model is served yet; the batch scores with exactly the served model once one is",
        )
        return {}
    try:
        dataset = resolve_dataset(
            ctx.namespace, batch.dataset_ref, ctx.cache.get("Dataset", ctx.namespace, batch.dataset_ref.name)
        )
    except Waiting as wait:
        ctx.conditions.set(BATCH, "Unknown", wait.reason, wait.message)
        return {}
    return run(ctx, batch, dataset, {"uri": served["uri"], "sha256": served["sha256"]}, recorded)


def run(ctx: Context, batch: Batch, dataset: dict[str, str], model: dict[str, str], recorded: Obj) -> Obj:
    key = run_key(dataset["version"], model["sha256"], batch)
    name = score_job_name(ctx.name, key)
    done = recorded.get("job") == name and recorded.get("state") in ("Succeeded", "Failed")
    jobs = [
        j
        for j in ctx.cache.children("Job", "ModelDeployment", ctx.namespace, ctx.name)
        if (j["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == SCORE_COMPONENT
    ]
    pruned = prune(
        ctx.kube,
        jobs,
        keep=set() if done else {name},
        successful=ctx.settings.successful_jobs_history_limit,
        failed=ctx.settings.failed_jobs_history_limit,
    )
    if pruned:
        ctx.logger.info("deleted finished scoring Jobs beyond the history limits: %s", ", ".join(pruned))
    if done:
        return {}  # a finished run (failed too) waits for a new version, model or batch spec: no hot loop
    start = recorded.get("startTime") if recorded.get("job") == name else None
    job = next((j for j in jobs if j["metadata"]["name"] == name), None)
    if job is None:
        manifest = score_job(
            name=ctx.name,
            namespace=ctx.namespace,
            batch=batch,
            dataset=dataset,
            model=model,
            key=key,
            settings=ctx.settings,
        )
        job = ctx.kube.create(ctx.adopt(manifest)) or manifest
        start = start or now()
        ctx.event(
            "Normal",
            "BatchStarted",
            f"scoring Dataset {dataset['name']} version {dataset['version'][:16]} with model "
            f"{model['sha256'][:12]} in {batch.shards} shard(s): Job {name}",
        )
    result = outcome(job, ctx.cache.job_pods(ctx.namespace, name), batch.shards)
    output = output_uri(ctx.settings, ctx.namespace, ctx.name, dataset["version"], model["sha256"])
    fields, condition = record(name, dataset, model, batch.shards, output, start, result, now())
    ctx.conditions.set(BATCH, *condition)
    return {"batch": fields}


def record(
    job: str,
    dataset: dict[str, str],
    model: dict[str, str],
    shards: int,
    output: str,
    start: str | None,
    result: Outcome,
    time: str,
) -> tuple[Obj, tuple[Status, str, str]]:
    """status.batch and the BatchScored condition (status, reason, message) of a run. Pure."""
    what = f"Dataset {dataset['name']} version {dataset['version'][:16]} with model {model['sha256'][:12]}"
    condition: Status
    if result.state == "Running":
        condition, message = "Unknown", f"Job {job} scores {what}: {result.message}"
    elif result.state == "Failed":
        condition, message = "False", f"Job {job} failed scoring {what}: {result.message}"
    else:
        condition, message = "True", f"scored {result.rows} rows of {what} into {output}"
    fields: Obj = {
        "job": job,
        "state": result.state,
        "dataset": dataset["name"],
        "datasetVersion": dataset["version"][:16],
        "inputURI": dataset["artifactURI"],
        "modelSha256": model["sha256"],
        "shards": shards,
        "succeededShards": result.succeeded,
        "rows": result.rows,
        "outputURI": output,
        "startTime": start,
        "completionTime": None if result.state == "Running" else time,
        "message": message[:1024],
    }
    return {k: v for k, v in fields.items() if v is not None}, (condition, result.reason, message[:1024])


def needs(spec: Obj) -> list[tuple[str, str]]:
    """The Dataset a batch scores: its new version starts a run."""
    ref = ((spec.get("batch") or {}).get("datasetRef") or {}).get("name")
    return [("Dataset", str(ref))] if ref else []
