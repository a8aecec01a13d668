"""ModelDeployment controller: resolves the model, applies Deployment + Service, reports Ready honestly."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from kubeloop import analysis
from kubeloop.api import MODEL_DEPLOYMENT
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.modeldeployment import ModelDeploymentSpec, Rollout
from kubeloop.builders.serving import (
    CANARY,
    MODEL_DIGEST_ANNOTATION,
    STABLE,
    autoscaler,
    canary_replicas,
    deployment,
    deployment_name,
    disruption_budget,
    network_policy,
    service,
    service_url,
    stable_replicas,
)
from kubeloop.contract import LABEL_TRACK
from kubeloop.controllers import batch, canary, metricsource
from kubeloop.controllers.cache import ANY
from kubeloop.controllers.conditions import Status
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import parse_result, reason_word
from kubeloop.controllers.kube import Obj

Model = dict[str, Any]
Progress = tuple[Status, Reason, str]  # the Progressing condition: status, reason, message
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
    # Batch scoring uses the model served when this reconcile began (status.model); a model that becomes
    # ready in this reconcile is scored with in the next, which its status write triggers.
    fields: Obj = batch.reconcile(ctx, spec)
    wanted, reason, message = resolve_model(
        ctx.namespace, spec, ctx.cache.in_namespace("TrainingJob", ctx.namespace)
    )
    serving: Model | None = status.get("model")
    if wanted is None:
        ctx.conditions.set(ConditionType.PROGRESSING, "False", reason, message)
        if serving is None:
            raise Waiting(reason, message, fields=fields)
        wanted = serving  # keep serving what is loaded while the new model is not ready

    progressing: Progress | None = None
    rejected = monitor_rejections(ctx, serving, fields)
    wanted, said = not_rejected(wanted, serving, status.get("previousModel"), rejected, ctx.generation)
    if said:
        progressing = ("False", Reason.MODEL_REJECTED, said)
    rollout = spec.rollout
    canary_wanted = (
        rollout is not None
        and rollout.strategy == "Canary"
        and serving is not None
        and serving["sha256"] != wanted["sha256"]
    )
    if canary_wanted:
        assert rollout is not None and serving is not None
        stable_model, progressing = canary_step(ctx, spec, rollout, serving, wanted, fields)
    else:
        stable_model = wanted
        if status.get("canary"):
            ctx.event("Normal", "CanaryCancelled", "the spec no longer asks for the canary's model")
            fields["canary"] = None
        delete_canary(ctx)

    live = apply_stable(ctx, spec, stable_model)
    applied(ctx, service(name=ctx.name, namespace=ctx.namespace))
    applied(ctx, network_policy(name=ctx.name, namespace=ctx.namespace, spec=spec, settings=ctx.settings))
    hpa = autoscaler(name=ctx.name, namespace=ctx.namespace, spec=spec)
    if hpa is not None:
        applied(ctx, hpa)
    elif ctx.cache.child("HorizontalPodAutoscaler", "ModelDeployment", ctx.namespace, ctx.name, ctx.name):
        ctx.kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ctx.namespace, ctx.name)
    budget = disruption_budget(name=ctx.name, namespace=ctx.namespace, spec=spec)
    if budget is not None:
        applied(ctx, budget)
    elif ctx.cache.child("PodDisruptionBudget", "ModelDeployment", ctx.namespace, ctx.name, ctx.name):
        ctx.kube.delete("policy/v1", "PodDisruptionBudget", ctx.namespace, ctx.name)

    ready, degraded, ready_replicas, summary = rollout_state(live, stable_model["sha256"])
    wanted_replicas = int(live.get("spec", {}).get("replicas", 1))
    fields.update(
        url=service_url(ctx.name, ctx.namespace),
        wantedSha256=wanted["sha256"],
        replicas=wanted_replicas,
        readyReplicas=ready_replicas,
    )
    pods = ctx.cache.children("Pod", "ModelDeployment", ctx.namespace, ctx.name)
    stable_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_TRACK) == STABLE]
    failure = None if ready else load_failure(stable_pods, stable_model["sha256"])
    if failure is not None:
        failed_reason, detail = failure
        ctx.conditions.set(
            ConditionType.DEGRADED,
            "True",
            failed_reason,
            f"model {stable_model['sha256'][:12]} cannot be served: {detail}",
        )
    else:
        ctx.conditions.set(
            ConditionType.DEGRADED,
            "True" if degraded else "False",
            Reason.ROLLOUT_STUCK if degraded else Reason.HEALTHY,
            summary,
        )
    listed = listed_endpoints(ctx, stable_pods, stable_model["sha256"])
    if wanted_replicas == 0:
        ctx.conditions.set(
            ConditionType.READY, "False", Reason.SCALED_TO_ZERO, "replicas is 0: no pod serves the model"
        )
        ctx.conditions.set(ConditionType.PROGRESSING, "False", Reason.SCALED_TO_ZERO, "replicas is 0")
    elif ready and listed < min(wanted_replicas, ready_replicas):
        ctx.conditions.set(
            ConditionType.READY,
            "False",
            Reason.WAITING_FOR_ENDPOINTS,
            f"{summary}; the Service's EndpointSlices list {listed} of them as ready",
        )
        ctx.conditions.set(ConditionType.PROGRESSING, "True", Reason.ROLLING_OUT, summary)
    elif ready:
        fields["model"] = served_model(stable_model, serving)
        if serving is not None and serving["sha256"] != stable_model["sha256"]:
            fields["previousModel"] = served_model(serving, None)
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
    if progressing is not None:
        ctx.conditions.set(ConditionType.PROGRESSING, *progressing)
        finish_promotion(ctx, stable_model, ready and listed >= min(wanted_replicas, ready_replicas), fields)
    return ctx.updated(fields)


def not_rejected(
    wanted: Model, serving: Model | None, previous: Model | None, rejected: list[Obj], generation: int
) -> tuple[Model, str]:
    """The model to roll out: ``wanted``, unless it was rolled back under this generation of the spec; then
    the one serving, or the one before it, whichever was not rolled back too (and why, for Progressing).
    With nothing else to go back to, the rejected model stays. Pure."""
    hit = canary.rejected_now(rejected, wanted["sha256"], generation)
    if hit is None:
        return wanted, ""
    fallback = next(
        (
            m
            for m in (serving, previous)
            if m
            and m["sha256"] != wanted["sha256"]
            and canary.rejected_now(rejected, m["sha256"], generation) is None
        ),
        None,
    )
    said = f"model {wanted['sha256'][:12]} was rolled back ({hit['reason']}: {hit['message']})"[:800]
    if fallback is None:
        return wanted, f"{said}; there is no previous model to go back to, so it still serves"
    chosen = {k: fallback[k] for k in ("uri", "sha256", "trainingJob") if fallback.get(k)}
    return chosen, f"{said}; model {fallback['sha256'][:12]} serves; change the spec to try it again"


def served_model(model: Model, serving: Model | None) -> Obj:
    """status.model: the model, and since when it serves (kept while it is the same)."""
    same = serving is not None and serving.get("sha256") == model["sha256"] and serving.get("since")
    since = (
        serving["since"]
        if same and serving is not None
        else canary.format_time(datetime.datetime.now(datetime.UTC))
    )
    found = {k: model.get(k) for k in ("uri", "sha256", "trainingJob")}
    return {**{k: v for k, v in found.items() if v is not None}, "since": since}


def monitor_rejections(ctx: Context, serving: Model | None, fields: Obj) -> list[Obj]:
    """The rejected models, with those the namespace's Monitors rolled back from while they served.

    A Monitor's rollback names the digest and its time; it counts for the model serving now, if made
    after that model began to serve (an older one is about an earlier time the same digest served).
    """
    rejected = list(ctx.status.get("rejected") or [])
    if serving is None:
        return rejected
    sha = serving["sha256"]
    for monitor in ctx.cache.in_namespace("Monitor", ctx.namespace):
        if ((monitor.get("spec") or {}).get("deploymentRef") or {}).get("name") != ctx.name:
            continue
        for entry in (monitor.get("status") or {}).get("rejected") or []:
            if entry.get("sha256") != sha or str(entry.get("time", "")) < str(serving.get("since", "")):
                continue
            if canary.rejected_now(rejected, sha, ctx.generation) is not None:
                continue
            who = f"Monitor {monitor['metadata']['name']}"
            decision = canary.StepDecision("rollback", who[:64], str(entry.get("reason", ""))[:1024])
            now = datetime.datetime.now(datetime.UTC)
            rejected.append(
                {
                    "sha256": sha,
                    **({"trainingJob": serving["trainingJob"]} if serving.get("trainingJob") else {}),
                    "generation": ctx.generation,
                    "reason": who[:64],
                    "message": decision.message,
                    "time": canary.format_time(now),
                }
            )
            fields["rejected"] = rejected[-10:]
            fields["lastRollout"] = rollout_result(serving, "RolledBack", decision, now)
            ctx.event(
                "Warning", "RolledBack", f"{who} rolled back model {sha[:12]}: {decision.message}"[:1024]
            )
    return rejected


def listed_endpoints(ctx: Context, pods: list[Obj], sha256: str) -> int:
    """Ready endpoints in the Service's EndpointSlices that are pods of this model: until kube-proxy
    has them, a request right after Ready could meet no backend."""
    names = {
        p["metadata"]["name"]
        for p in pods
        if (p["metadata"].get("annotations") or {}).get(MODEL_DIGEST_ANNOTATION) == sha256
    }
    count = 0
    for slice_ in ctx.cache.children("EndpointSlice", "ModelDeployment", ctx.namespace, ctx.name):
        for endpoint in slice_.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            if (endpoint.get("conditions") or {}).get("ready") and ref.get("name") in names:
                count += 1
    return count


def apply_stable(ctx: Context, spec: ModelDeploymentSpec, model: Model) -> Obj:
    """The stable Deployment; one made before canaries existed has a selector without the track label,
    which cannot be changed in place: it is replaced (its pods stop, the new ones start)."""
    manifest = server_manifest(ctx, spec, model)
    live = ctx.cache.child("Deployment", "ModelDeployment", ctx.namespace, ctx.name, ctx.name)
    if live is not None and live.get("spec", {}).get("selector") != manifest["spec"]["selector"]:
        ctx.event("Normal", "DeploymentReplaced", "the Deployment's selector changed; it is replaced")
        ctx.kube.delete("apps/v1", "Deployment", ctx.namespace, ctx.name)
        return ctx.kube.apply(ctx.adopt(manifest))
    return applied(ctx, manifest)


def delete_canary(ctx: Context) -> None:
    name = deployment_name(ctx.name, CANARY)
    if ctx.cache.child("Deployment", "ModelDeployment", ctx.namespace, ctx.name, name) is not None:
        ctx.kube.delete("apps/v1", "Deployment", ctx.namespace, name)
    ctx.memory.pop("window", None)


def canary_step(
    ctx: Context, spec: ModelDeploymentSpec, rollout: Rollout, serving: Model, wanted: Model, fields: Obj
) -> tuple[Model, Progress]:
    """One look at the canary of ``wanted`` beside ``serving``: the model the stable Deployment runs (the
    canary's only once it is promoted) and the Progressing condition to show."""
    status, now = ctx.status, datetime.datetime.now(datetime.UTC)
    steps = rollout.steps or []
    sha = wanted["sha256"]
    rejected = list(fields.get("rejected") or status.get("rejected") or [])
    progressing: Progress
    stable_live = ctx.cache.child("Deployment", "ModelDeployment", ctx.namespace, ctx.name, ctx.name)
    stable_count = int((stable_live or {}).get("spec", {}).get("replicas", stable_replicas(spec)))
    current: Obj | None = status.get("canary")
    if current is None or current.get("sha256") != sha:
        if current is not None:
            ctx.event("Normal", "CanaryReplaced", f"canary {current['sha256'][:12]} replaced by {sha[:12]}")
        current = new_step(wanted, 0, steps[0].weight, stable_count, now)
        ctx.memory.pop("window", None)
        ctx.event(
            "Normal",
            "CanaryStarted",
            f"canary of model {sha[:12]} beside {serving['sha256'][:12]}: step 1 of {len(steps)}, "
            f"weight {steps[0].weight}%",
        )
    if current["phase"] == "Promoting":
        fields["canary"] = current
        applied(ctx, server_manifest(ctx, spec, wanted, CANARY, int(current["replicas"])))
        ctx.requeue_after(canary.SCRAPE_SECONDS)
        progressing = (
            "True",
            Reason.PROMOTING,
            f"canary {sha[:12]} promoted; the stable Deployment is taking its model",
        )
        return wanted, progressing

    live = applied(ctx, server_manifest(ctx, spec, wanted, CANARY, int(current["replicas"])))
    ready, _, ready_count, _ = rollout_state(live, sha)
    pods = ctx.cache.children("Pod", "ModelDeployment", ctx.namespace, ctx.name)
    canary_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_TRACK) == CANARY]
    failure = load_failure(canary_pods, sha)
    step = int(current["step"])
    step_start = canary.parse_time(current["stepStartTime"])
    window_start = canary.parse_time(current["windowStartTime"]) if current.get("windowStartTime") else None
    checks: list[analysis.Check] = []
    given = rollout.analysis.source if rollout.analysis is not None else None
    source = given.prometheus_url if given is not None else None
    waiting_note = ""
    if failure is not None:
        decision = canary.StepDecision("rollback", failure[0], f"the canary cannot serve: {failure[1]}")
    else:
        if current["phase"] == "Starting" and ready:
            missing = unscraped_by_prometheus(ctx, source, pods, sha, serving["sha256"], now)
            if missing:
                waiting_note = (
                    f"; waiting for Prometheus at {source} to scrape {', '.join(sorted(missing))} "
                    "(the window counts from each pod's first sample)"
                )
            else:
                current = {**current, "phase": "Analysing"}
                window_start = now
        if current["phase"] == "Analysing" and window_start is not None:
            key = (sha, step, canary.format_time(window_start))
            known = ctx.memory.get("window")
            if source is None and (not isinstance(known, canary.WindowState) or known.key != key):
                if known is not None or current.get("windowStartTime"):
                    window_start = now  # the counters were lost (an operator restart): start again
                key = (sha, step, canary.format_time(window_start))
            canary_pods = canary.server_pods(pods, CANARY, sha)
            stable_pods = canary.server_pods(pods, STABLE, serving["sha256"])
            unavailable: list[analysis.Check] | None = None
            try:
                if source is None:
                    state = canary.observe_window(ctx.memory, key, window_start, canary_pods, stable_pods)
                else:
                    state = canary.query_window(
                        ctx.memory, key, source, ctx.namespace, window_start, now, canary_pods, stable_pods
                    )
            except metricsource.SourceError as error:
                state = canary.WindowState(key, analysis.Window(), analysis.Window())
                unavailable = canary.unavailable_checks(rollout.analysis, str(error))
            checks = unavailable if unavailable is not None else canary.run_checks(rollout.analysis, state)
            current = {
                **current,
                "windowStartTime": canary.format_time(window_start),
                "observedWeight": canary.observed_weight(state),
                "checks": [canary.check_status(c) for c in checks] or None,
                "lastCheckTime": canary.format_time(now),
            }
        order = canary.manual(ctx.body["metadata"].get("annotations") or {}, sha)
        decision = canary.decide_step(
            rollout, step, current["phase"], now, step_start, window_start, checks, order
        )
    said = f"canary {sha[:12]} step {step + 1}/{len(steps)}, weight {current['weight']}%"
    if current.get("observedWeight") is not None:
        said += f" (observed {current['observedWeight']}% of requests)"
    if decision.action == "wait":
        ready_note = waiting_note if ready else f", {ready_count} of {current['replicas']} canary pods ready"
        fields["canary"] = {**current, "message": f"{decision.message}{ready_note}"[:1024]}
        progressing = (
            "True",
            Reason.CANARY_PROGRESSING,
            f"{said}: {decision.message}{ready_note}"[:1024],
        )
        ctx.requeue_after(canary.SCRAPE_SECONDS)
        return serving, progressing
    if decision.action == "advance":
        nxt = step + 1
        ctx.memory.pop("window", None)
        ctx.event(
            "Normal",
            "CanaryStepPassed",
            f"{said} passed; step {nxt + 1} at weight {steps[nxt].weight}%: {decision.message}"[:1024],
        )
        fields["canary"] = new_step(wanted, nxt, steps[nxt].weight, stable_count, now)
        progressing = (
            "True",
            Reason.CANARY_PROGRESSING,
            f"canary {sha[:12]} step {nxt + 1}/{len(steps)}, weight {steps[nxt].weight}%: starting",
        )
        ctx.requeue_after(0)
        return serving, progressing
    if decision.action == "promote":
        ctx.event("Normal", "CanaryPromoting", f"{said}: {decision.reason}: {decision.message}"[:1024])
        fields["canary"] = {**current, "phase": "Promoting", "message": decision.message[:1024]}
        fields["lastRollout"] = rollout_result(wanted, "Promoted", decision, now)
        progressing = (
            "True",
            Reason.PROMOTING,
            f"canary {sha[:12]} promoted ({decision.reason}); the stable Deployment takes its model",
        )
        ctx.requeue_after(canary.SCRAPE_SECONDS)
        return wanted, progressing
    # rollback
    delete_canary(ctx)
    entry = {
        "sha256": sha,
        "trainingJob": wanted.get("trainingJob"),
        "generation": ctx.generation,
        "reason": decision.reason[:64],
        "message": decision.message[:1024],
        "time": canary.format_time(now),
    }
    fields["rejected"] = [*rejected, {k: v for k, v in entry.items() if v is not None}][-10:]
    fields["canary"] = None
    fields["lastRollout"] = rollout_result(wanted, "RolledBack", decision, now)
    ctx.event(
        "Warning",
        "RolledBack",
        f"{said} rolled back, {decision.reason}: {decision.message}; model {serving['sha256'][:12]} serves"[
            :1024
        ],
    )
    progressing = (
        "False",
        Reason.ROLLED_BACK,
        f"canary {sha[:12]} rolled back ({decision.reason}): {decision.message}"[:1024],
    )
    return serving, progressing


def finish_promotion(ctx: Context, stable_model: Model, stable_ready: bool, fields: Obj) -> None:
    """Promoting ends when the stable Deployment serves the canary's model: the canary pods go."""
    current = fields.get("canary")
    if not current or current.get("phase") != "Promoting":
        return
    if not stable_ready or stable_model["sha256"] != current["sha256"]:
        ctx.conditions.set(
            ConditionType.PROGRESSING,
            "True",
            Reason.PROMOTING,
            f"canary {current['sha256'][:12]} promoted; the stable Deployment is taking its model",
        )
        return
    delete_canary(ctx)
    fields["canary"] = None
    ctx.event("Normal", "Promoted", f"model {current['sha256'][:12]} is now the stable model")
    ctx.conditions.set(
        ConditionType.PROGRESSING,
        "False",
        Reason.PROMOTED,
        f"model {current['sha256'][:12]} promoted; every replica serves it",
    )


def unscraped_by_prometheus(
    ctx: Context,
    source: str | None,
    pods: list[Obj],
    canary_sha: str,
    stable_sha: str,
    now: datetime.datetime,
) -> list[str]:
    """The serving pods of both tracks Prometheus has not scraped yet; none without Prometheus, or when it
    fails (the window then starts and its checks say the error, inconclusive)."""
    if source is None:
        return []
    serving = [*canary.server_pods(pods, CANARY, canary_sha), *canary.server_pods(pods, STABLE, stable_sha)]
    try:
        return metricsource.unscraped(source, ctx.namespace, serving, now)
    except metricsource.SourceError:
        return []


def new_step(model: Model, step: int, weight: int, stable_count: int, now: datetime.datetime) -> Obj:
    fields = {
        "sha256": model["sha256"],
        "uri": model["uri"],
        "trainingJob": model.get("trainingJob"),
        "phase": "Promoting" if weight >= 100 else "Starting",
        "step": step,
        "weight": weight,
        "replicas": canary_replicas(stable_count, weight),
        "stepStartTime": canary.format_time(now),
    }
    return {k: v for k, v in fields.items() if v is not None}


def rollout_result(model: Model, result: str, decision: canary.StepDecision, now: datetime.datetime) -> Obj:
    found = {
        "sha256": model["sha256"],
        "trainingJob": model.get("trainingJob"),
        "result": result,
        "reason": decision.reason[:64],
        "message": decision.message[:1024],
        "time": canary.format_time(now),
    }
    return {k: v for k, v in found.items() if v is not None}


def server_manifest(
    ctx: Context, spec: ModelDeploymentSpec, model: Model, track: str = STABLE, replicas: int | None = None
) -> Obj:
    return deployment(
        name=ctx.name,
        namespace=ctx.namespace,
        spec=spec,
        uri=model["uri"],
        sha256=model["sha256"],
        settings=ctx.settings,
        track=track,
        replicas=replicas,
    )


def needs(spec: Obj) -> list[tuple[str, str]]:
    """The TrainingJobs a ModelDeployment's spec names: its trainingJobRef, or any with a selector."""
    found = []
    ref = (spec.get("model") or {}).get("trainingJobRef") or {}
    if ref.get("name"):
        found.append(("TrainingJob", str(ref["name"])))
    if spec.get("trainingJobSelector") is not None:
        found.append(("TrainingJob", ANY))
    found.append(("Monitor", ANY))  # a Monitor's rollback is in its status
    found += batch.needs(spec)
    return found


register(MODEL_DEPLOYMENT, reconcile, needs)
