"""ModelDeployment controller: resolves the model, applies Deployment + Service, reports Ready honestly."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from kubeloop.api import MODEL_DEPLOYMENT
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.builders.serving import (
    MODEL_DIGEST_ANNOTATION,
    autoscaler,
    deployment,
    service,
    service_url,
)
from kubeloop.controllers.cache import ANY
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import parse_result, reason_word
from kubeloop.controllers.kube import Obj

Model = dict[str, Any]
# On each child: a hash of the manifest last applied, so an unchanged child is not applied again.
APPLIED_ANNOTATION = "kubeloop.io/applied"


def _eligible(training_job: Obj) -> tuple[bool, Reason, str]:
    """Whether a TrainingJob's model may be served; otherwise the reason and message to show."""
    name = training_job["metadata"]["name"]
    status = training_job.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    succeeded = conditions.get("Succeeded", {}).get("status")
    if succeeded == "False":
        return (
            False,
            Reason.TRAINING_JOB_FAILED,
            f"TrainingJob {name} failed: {conditions['Succeeded'].get('message', '')}",
        )
    if succeeded != "True" or not status.get("model"):
        return False, Reason.WAITING_FOR_TRAINING_JOB, f"TrainingJob {name} has not produced a model yet"
    if conditions.get("GatePassed", {}).get("status") != "True":
        message = conditions.get("GatePassed", {}).get("message", "")
        return False, Reason.GATE_NOT_PASSED, f"TrainingJob {name} did not pass its quality gate: {message}"
    return True, Reason.MODEL_SERVING, ""


def resolve_model(
    namespace: str, spec: ModelDeploymentSpec, training_jobs: list[Obj]
) -> tuple[Model | None, Reason, str]:
    """The model to serve ({uri, sha256, trainingJob}), or (None, reason, message): what it waits for.
    ``training_jobs`` are the namespace's. Pure."""
    if spec.update_policy == "Auto" and spec.training_job_selector is not None:
        wanted = spec.training_job_selector.match_labels.items()
        candidates = [tj for tj in training_jobs if wanted <= (tj["metadata"].get("labels") or {}).items()]
        eligible = [tj for tj in candidates if _eligible(tj)[0]]
        if eligible:
            newest = max(eligible, key=lambda tj: tj["status"].get("completionTime", ""))
            model = newest["status"]["model"]
            return (
                {"uri": model["uri"], "sha256": model["sha256"], "trainingJob": newest["metadata"]["name"]},
                Reason.MODEL_SERVING,
                "",
            )
    source = spec.model
    if source.uri is not None and source.sha256 is not None:
        return {"uri": source.uri, "sha256": source.sha256}, Reason.MODEL_SERVING, ""
    if source.training_job_ref is None:
        return None, Reason.WAITING_FOR_TRAINING_JOB, "no TrainingJob matches trainingJobSelector yet"
    name = source.training_job_ref.name
    training_job = next((tj for tj in training_jobs if tj["metadata"]["name"] == name), None)
    if training_job is None:
        return (
            None,
            Reason.WAITING_FOR_TRAINING_JOB,
            f"TrainingJob {name} does not exist in namespace {namespace} yet",
        )
    ok, reason, message = _eligible(training_job)
    if not ok:
        return None, reason, message
    model = training_job["status"]["model"]
    return {"uri": model["uri"], "sha256": model["sha256"], "trainingJob": name}, reason, ""


def rollout_state(live: Obj, sha256: str) -> tuple[bool, bool, int, str]:
    """(ready, degraded, ready replicas with the wanted model, message) from the Deployment's status.

    Ready needs the controller to have seen the current template and every replica to be updated and
    available: a pod is available only after its readiness probe (the model loaded and self-tested) passed.
    """
    spec, status = live.get("spec", {}), live.get("status", {})
    wanted = int(spec.get("replicas", 1))
    annotated = (
        spec.get("template", {}).get("metadata", {}).get("annotations", {}).get(MODEL_DIGEST_ANNOTATION)
    )
    current = (
        status.get("observedGeneration", 0) >= live["metadata"].get("generation", 1) and annotated == sha256
    )
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    total = int(status.get("replicas", 0))
    ready_replicas = min(updated, available) if current else 0
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    degraded = conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    ready = current and wanted > 0 and updated >= wanted and available >= wanted and total == updated
    message = f"{ready_replicas} of {wanted} replicas serve model {sha256[:12]}"
    if degraded:
        message += f"; {conditions['Progressing'].get('message', 'the rollout is stuck')}"
    return ready, degraded, ready_replicas, message


def load_failure(pods: list[Obj], sha256: str) -> tuple[str, str] | None:
    """(reason, message) when a pod of this model failed to fetch or load it, from the runtime's result.

    The fetch init step and the server exit with a JSON result in their termination message (the runtime
    contract); a pod that keeps failing shows it in ``state`` or, between restarts, ``lastState``.
    """
    for pod in pods:
        meta = pod.get("metadata", {})
        if (
            meta.get("deletionTimestamp")
            or meta.get("annotations", {}).get(MODEL_DIGEST_ANNOTATION) != sha256
        ):
            continue
        status = pod.get("status", {})
        for container in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            for state in (container.get("state", {}), container.get("lastState", {})):
                terminated = state.get("terminated") or {}
                if not terminated or terminated.get("exitCode", 0) == 0:
                    continue
                result = parse_result(terminated.get("message"))
                reason = reason_word(
                    str(result.get("reason") or terminated.get("reason") or "ContainerFailed")
                )
                detail = str(result.get("message") or f"exit code {terminated.get('exitCode')}")
                return reason, f"pod {meta.get('name')}: {container.get('name')} failed: {detail}"[:1024]
    return None


def applied(ctx: Context, manifest: Obj) -> Obj:
    """Server-side apply a child unless the cache shows it already applied exactly so (a hash of the
    manifest on the child): an event that changes nothing in the wanted children costs no request."""
    ctx.adopt(manifest)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    meta = manifest["metadata"]
    live = ctx.cache.child(manifest["kind"], "ModelDeployment", ctx.namespace, ctx.name, meta["name"])
    if live is not None and (live["metadata"].get("annotations") or {}).get(APPLIED_ANNOTATION) == digest:
        return live
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_ANNOTATION: digest}
    return ctx.kube.apply(manifest)


def reconcile(ctx: Context) -> BaseModel:
    try:
        spec = ModelDeploymentSpec.model_validate(ctx.spec)
    except ValidationError as error:
        raise Invalid(Reason.INVALID_SPEC, f"the spec does not match the API: {error}") from None
    status = ctx.status
    model, reason, message = resolve_model(
        ctx.namespace, spec, ctx.cache.in_namespace("TrainingJob", ctx.namespace)
    )
    if model is None:
        serving = status.get("model")
        ctx.conditions.set(ConditionType.PROGRESSING, "False", reason, message)
        if serving is None:
            raise Waiting(reason, message)
        model = serving  # keep serving what is loaded while the new model is not ready

    args = {"name": ctx.name, "namespace": ctx.namespace}
    live = applied(
        ctx, deployment(**args, spec=spec, uri=model["uri"], sha256=model["sha256"], settings=ctx.settings)
    )
    applied(ctx, service(**args))
    hpa = autoscaler(**args, spec=spec)
    if hpa is not None:
        applied(ctx, hpa)
    elif ctx.cache.child("HorizontalPodAutoscaler", "ModelDeployment", ctx.namespace, ctx.name, ctx.name):
        ctx.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ctx.namespace, ctx.name)

    ready, degraded, ready_replicas, summary = rollout_state(live, model["sha256"])
    fields: Obj = {
        "url": service_url(ctx.name, ctx.namespace),
        "wantedSha256": model["sha256"],
        "replicas": int(live.get("spec", {}).get("replicas", 1)),
        "readyReplicas": ready_replicas,
    }
    pods = ctx.cache.children("Pod", "ModelDeployment", ctx.namespace, ctx.name)
    failure = None if ready else load_failure(pods, model["sha256"])
    if failure is not None:
        failed_reason, detail = failure
        ctx.conditions.set(
            ConditionType.DEGRADED,
            "True",
            failed_reason,
            f"model {model['sha256'][:12]} cannot be served: {detail}",
        )
    else:
        ctx.conditions.set(
            ConditionType.DEGRADED,
            "True" if degraded else "False",
            Reason.ROLLOUT_STUCK if degraded else Reason.HEALTHY,
            summary,
        )
    if ready:
        fields["model"] = {k: v for k, v in model.items() if v is not None}
        ctx.conditions.set(ConditionType.READY, "True", Reason.MODEL_SERVING, summary)
        ctx.conditions.set(ConditionType.PROGRESSING, "False", Reason.ROLLOUT_COMPLETE, summary)
    elif failure is not None:
        ctx.conditions.set(ConditionType.READY, "False", failure[0], f"{summary}: {failure[1]}")
    else:
        ctx.conditions.set(
            ConditionType.READY,
            "False",
            Reason.MODEL_LOADING,
            f"{summary}: waiting for the pods to load and self-test it",
        )
        ctx.conditions.set(ConditionType.PROGRESSING, "True", Reason.ROLLING_OUT, summary)
    return ctx.updated(fields)


def needs(spec: Obj) -> list[tuple[str, str]]:
    """The TrainingJobs a ModelDeployment's spec names: its trainingJobRef, or any with a selector."""
    found = []
    ref = (spec.get("model") or {}).get("trainingJobRef") or {}
    if ref.get("name"):
        found.append(("TrainingJob", str(ref["name"])))
    if spec.get("trainingJobSelector") is not None:
        found.append(("TrainingJob", ANY))
    return found


register(MODEL_DEPLOYMENT, reconcile, needs)
