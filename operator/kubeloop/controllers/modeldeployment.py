"""ModelDeployment controller: resolves the model, applies Deployment + Service, reports Ready honestly."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kubeloop.api import API_VERSION, MODEL_DEPLOYMENT
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.builders.serving import (
    MODEL_DIGEST_ANNOTATION,
    autoscaler,
    deployment,
    selector,
    service,
    service_url,
)
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import parse_result, reason_word
from kubeloop.controllers.kube import Obj

Model = dict[str, Any]


def _eligible(training_job: Obj) -> tuple[bool, str, str]:
    """Whether a TrainingJob's model may be served; otherwise the reason and message to show."""
    name = training_job["metadata"]["name"]
    status = training_job.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    succeeded = conditions.get("Succeeded", {}).get("status")
    if succeeded == "False":
        return (
            False,
            "TrainingJobFailed",
            f"TrainingJob {name} failed: {conditions['Succeeded'].get('message', '')}",
        )
    if succeeded != "True" or not status.get("model"):
        return False, "WaitingForTrainingJob", f"TrainingJob {name} has not produced a model yet"
    if conditions.get("GatePassed", {}).get("status") != "True":
        message = conditions.get("GatePassed", {}).get("message", "")
        return False, "GateNotPassed", f"TrainingJob {name} did not pass its quality gate: {message}"
    return True, "", ""


def resolve_model(ctx: Context, spec: ModelDeploymentSpec) -> tuple[Model | None, str, str]:
    """The model to serve ({uri, sha256, trainingJob}), or (None, reason, message): what it waits for."""
    if spec.update_policy == "Auto" and spec.training_job_selector is not None:
        candidates = ctx.kube.list(
            API_VERSION, "TrainingJob", ctx.namespace, spec.training_job_selector.match_labels
        )
        eligible = [tj for tj in candidates if _eligible(tj)[0]]
        if eligible:
            newest = max(eligible, key=lambda tj: tj["status"].get("completionTime", ""))
            model = newest["status"]["model"]
            return (
                {"uri": model["uri"], "sha256": model["sha256"], "trainingJob": newest["metadata"]["name"]},
                "",
                "",
            )
    source = spec.model
    if source.uri is not None and source.sha256 is not None:
        return {"uri": source.uri, "sha256": source.sha256}, "", ""
    if source.training_job_ref is None:
        return None, "WaitingForTrainingJob", "no TrainingJob matches trainingJobSelector yet"
    name = source.training_job_ref.name
    training_job = ctx.kube.get(API_VERSION, "TrainingJob", ctx.namespace, name)
    if training_job is None:
        return (
            None,
            "WaitingForTrainingJob",
            f"TrainingJob {name} does not exist in namespace {ctx.namespace} yet",
        )
    ok, reason, message = _eligible(training_job)
    if not ok:
        return None, reason, message
    model = training_job["status"]["model"]
    return {"uri": model["uri"], "sha256": model["sha256"], "trainingJob": name}, "", ""


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


def reconcile(ctx: Context) -> Obj:
    try:
        spec = ModelDeploymentSpec.model_validate(ctx.spec)
    except ValidationError as error:
        ctx.conditions.set("Ready", "False", "InvalidSpec", f"the spec does not match the API: {error}")
        return {}
    status = ctx.status
    model, reason, message = resolve_model(ctx, spec)
    if model is None:
        serving = status.get("model")
        ctx.conditions.set("Progressing", "False", reason, message)
        if serving is None:
            ctx.conditions.set("Ready", "False", reason, message)
            return {}
        model = serving  # keep serving what is loaded while the new model is not ready

    args = {"name": ctx.name, "namespace": ctx.namespace}
    live = ctx.kube.apply(
        ctx.adopt(
            deployment(**args, spec=spec, uri=model["uri"], sha256=model["sha256"], settings=ctx.settings)
        )
    )
    ctx.kube.apply(ctx.adopt(service(**args)))
    hpa = autoscaler(**args, spec=spec)
    if hpa is not None:
        ctx.kube.apply(ctx.adopt(hpa))
    elif status.get("observedGeneration") and spec.autoscaling is None:
        ctx.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ctx.namespace, ctx.name)

    ready, degraded, ready_replicas, summary = rollout_state(live, model["sha256"])
    fields: Obj = {
        "url": service_url(ctx.name, ctx.namespace),
        "wantedSha256": model["sha256"],
        "replicas": int(live.get("spec", {}).get("replicas", 1)),
        "readyReplicas": ready_replicas,
    }
    failure = (
        None
        if ready
        else load_failure(ctx.kube.list("v1", "Pod", ctx.namespace, selector(ctx.name)), model["sha256"])
    )
    if failure is not None:
        reason, detail = failure
        ctx.conditions.set(
            "Degraded", "True", reason, f"model {model['sha256'][:12]} cannot be served: {detail}"
        )
    else:
        ctx.conditions.set(
            "Degraded", "True" if degraded else "False", "RolloutStuck" if degraded else "Healthy", summary
        )
    if ready:
        fields["model"] = {k: v for k, v in model.items() if v is not None}
        ctx.conditions.set("Ready", "True", "ModelServing", summary)
        ctx.conditions.set("Progressing", "False", "RolloutComplete", summary)
    elif failure is not None:
        ctx.conditions.set("Ready", "False", failure[0], f"{summary}: {failure[1]}")
    else:
        ctx.conditions.set(
            "Ready", "False", "ModelLoading", f"{summary}: waiting for the pods to load and self-test it"
        )
        ctx.conditions.set("Progressing", "True", "RollingOut", summary)
    return fields


register(MODEL_DEPLOYMENT, reconcile)
