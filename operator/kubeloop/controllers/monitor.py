"""Monitor controller: at every interval, SLOs and input drift of the served model, and the actions.

The operator scrapes the ``/metrics`` of every ready pod that serves the ModelDeployment's model
(``status.model``) once per interval and keeps the scrapes in memory, as long as the longest window; with
``source.prometheusURL`` it asks Prometheus for the same counters of the same pods over the window instead
(``metricsource``: the same rounds, the same verdicts). A check
looks at the increase of the servers' counters over its window (``kubeloop.analysis``, like Prometheus'
``increase()``: per pod, resets handled, a pod started inside the window counted from zero): error rate and
p99 latency for the SLO window, the per-bin input counts against the model's training baseline for the
drift window. Too few requests or values is inconclusive (Unknown), never a verdict either way.

Actions. ``alert``: Events on the transitions of Drifted and SLOViolated (without it, the conditions and
metrics alone). ``rollback``: on an SLO violation the served digest goes into ``status.rejected``; the
ModelDeployment reads it and goes back to its previous model (its spec is never written). ``retrain``: on
drift, a TrainingJob named ``<monitor>-retrain-<n>`` from the template against the newest Dataset version;
the name is the decision's, so a second attempt after a crash finds the first (409) instead of making
another; coolDown and maxRetrains bound the loop.
"""

from __future__ import annotations

import datetime

from pydantic import BaseModel, ValidationError

from kubeloop import analysis, stats
from kubeloop.api import API_VERSION, MONITOR
from kubeloop.api.common import duration_seconds
from kubeloop.api.conditions import ConditionType, Reason
from kubeloop.api.monitor import MonitorSpec
from kubeloop.builders.serving import CANARY, STABLE
from kubeloop.contract import child_name, label_value
from kubeloop.controllers import canary, metrics, metricsource
from kubeloop.controllers.errors import Invalid, Waiting
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.kube import Obj

LABEL_MONITOR = "kubeloop.io/retrained-by"
# Scrapes kept beyond the longest window: one more, so the window's first increase has a start.
SPARE_SCRAPES = 1


def window_totals(
    scrapes: list[metricsource.Scrape], since: datetime.datetime
) -> tuple[analysis.Totals, float]:
    """The counters' increase over the rounds from ``since`` on, and the seconds they span. Pure."""
    window, span = metricsource.window(scrapes, since)
    return window.totals(), span


def drift_check(verdict: stats.DriftVerdict) -> analysis.Check:
    """The drift verdict as one check: the worst feature's score, the drifted ones named first."""
    judged = [f for f in verdict.features if f.score is not None]
    failed = [f for f in verdict.features if f.verdict == "fail"]
    worst = max(judged, key=lambda f: f.score or 0.0, default=None)
    if verdict.verdict == "fail":
        named = ", ".join(f"{f.feature} ({f.method} {f.score:.3g})" for f in failed[:5])
        message = f"{len(failed)} of {len(verdict.features)} features drifted: {named}"
    else:
        message = verdict.reason
    samples = min((f.samples for f in verdict.features), default=0.0)
    value = None if worst is None else worst.score
    return analysis.Check("inputDrift", verdict.verdict, value, verdict.threshold, samples, message[:1024])


def feature_scores(verdict: stats.DriftVerdict) -> list[Obj]:
    ordered = sorted(verdict.features, key=lambda f: (f.verdict != "fail", -(f.score or 0.0)))
    return [
        {
            k: v
            for k, v in {
                "feature": f.feature[:128],
                "verdict": f.verdict,
                "method": f.method,
                "score": f.score,
                "pValue": f.adjusted_p_value,
                "samples": f.samples,
            }.items()
            if v is not None
        }
        for f in ordered[:200]
    ]


def reconcile(ctx: Context) -> BaseModel:
    try:
        spec = MonitorSpec.model_validate(ctx.spec)
    except ValidationError as error:
        raise Invalid(Reason.INVALID_SPEC, f"the spec does not match the API: {error}") from None
    interval = duration_seconds(spec.interval)
    if spec.slo is not None and duration_seconds(spec.slo.window) < 4 * interval:
        raise Invalid(
            Reason.INVALID_SPEC,
            f"slo.window {spec.slo.window} is shorter than four intervals ({spec.interval} each): "
            "a window needs at least four scrapes",
        )
    if spec.drift is not None and duration_seconds(spec.drift.window) < interval:
        raise Invalid(Reason.INVALID_SPEC, f"drift.window {spec.drift.window} is shorter than interval")
    alert = spec.actions is None or spec.actions.alert
    if not alert:
        ctx.quiet.update({ConditionType.DRIFTED, ConditionType.SLO_VIOLATED})
    name = spec.deployment_ref.name
    md = ctx.cache.get("ModelDeployment", ctx.namespace, name)
    if md is None:
        raise Waiting(
            Reason.WAITING_FOR_MODEL_DEPLOYMENT,
            f"ModelDeployment {name} does not exist in namespace {ctx.namespace} yet",
        )
    served = (md.get("status") or {}).get("model") or {}
    sha = served.get("sha256")
    if not sha:
        raise Waiting(Reason.NO_PODS, f"ModelDeployment {name} serves no model yet")

    now = datetime.datetime.now(datetime.UTC)
    status = ctx.status
    last = status.get("lastCheckTime")
    if last and status.get("servedSha256") == sha:
        due = canary.parse_time(last) + datetime.timedelta(seconds=interval)
        if now < due:
            ctx.requeue_after((due - now).total_seconds())
            return ctx.updated({})
    ctx.requeue_after(interval)

    memory = ctx.memory
    if memory.get("sha") != sha:
        memory.update(sha=sha, scrapes=[], baseline=None)
    pods = [
        p
        for track in (STABLE, CANARY)
        for p in canary.server_pods(
            ctx.cache.children("Pod", "ModelDeployment", ctx.namespace, name), track, sha
        )
    ]
    longest = max(
        duration_seconds(spec.slo.window) if spec.slo else 0.0,
        duration_seconds(spec.drift.window) if spec.drift else 0.0,
    )
    horizon = now - datetime.timedelta(seconds=longest + SPARE_SCRAPES * interval)
    source = spec.source.prometheus_url if spec.source is not None else None
    if source is None:
        samples = canary.scrape(pods)
        starts = {p["metadata"]["uid"]: str(p.get("status", {}).get("startTime", "")) for p in pods}
        scrapes: list[metricsource.Scrape] = memory["scrapes"]
        scrapes.append(
            metricsource.Scrape(now, {uid: (s, starts[uid]) for uid, s in samples.items() if s is not None})
        )
        memory["scrapes"] = scrapes = [s for s in scrapes if s.time >= horizon]
    else:
        try:
            scrapes = metricsource.prometheus_scrapes(source, ctx.namespace, pods, horizon, now, interval)
        except metricsource.SourceError as error:
            unavailable(ctx, spec, str(error))
            return ctx.updated({"lastCheckTime": canary.format_time(now), "servedSha256": sha})
        if pods and not scrapes:
            unavailable(
                ctx,
                spec,
                f"Prometheus at {source} has no series of the {len(pods)} pods serving {sha[:12]} over the "
                "window: it must scrape them with the labels namespace and pod (new pods need one scrape)",
            )
            return ctx.updated({"lastCheckTime": canary.format_time(now), "servedSha256": sha})
    if memory.get("baseline") is None and pods:
        memory["baseline"] = canary.fetch_baseline(pods)

    fields: Obj = {"lastCheckTime": canary.format_time(now), "servedSha256": sha}
    checks: list[analysis.Check] = []
    if not pods:
        ctx.conditions.set(
            ConditionType.READY, "False", Reason.NO_PODS, f"no running pod of {name} serves {sha[:12]}"
        )
    else:
        ctx.conditions.set(
            ConditionType.READY,
            "True",
            Reason.CHECKED,
            f"checked {len(pods)} pods of {name} serving {sha[:12]}",
        )
    span = 0.0
    if spec.slo is not None:
        totals, span = window_totals(
            scrapes, now - datetime.timedelta(seconds=duration_seconds(spec.slo.window))
        )
        slo_checks = []
        if spec.slo.max_error_rate is not None:
            slo_checks.append(
                analysis.slo_error_check(totals, spec.slo.max_error_rate, spec.slo.min_requests)
            )
        if spec.slo.max_p99_latency_ms is not None:
            slo_checks.append(
                analysis.latency_check(totals, spec.slo.max_p99_latency_ms, spec.slo.min_requests, subject="")
            )
        checks += slo_checks
        judge_slo(ctx, spec, sha, slo_checks, totals, fields, now)
    else:
        ctx.conditions.set(ConditionType.SLO_VIOLATED, "Unknown", Reason.NOT_CHECKED, "no slo is set")
    if spec.drift is not None:
        totals, drift_span = window_totals(
            scrapes, now - datetime.timedelta(seconds=duration_seconds(spec.drift.window))
        )
        span = max(span, drift_span)
        check = judge_drift(ctx, spec, memory.get("baseline"), totals, fields)
        if check is not None:
            checks.append(check)
            if check.verdict == "fail":
                retrain(ctx, spec, check, fields, now)
    else:
        ctx.conditions.set(ConditionType.DRIFTED, "Unknown", Reason.NOT_CHECKED, "no drift check is set")
    fields["windowSeconds"] = round(span, 1)
    fields["checks"] = [canary.check_status(c) for c in checks] or None
    metrics.observe_monitor(ctx.namespace, ctx.name, checks, fields.get("driftScores") or {})
    return ctx.updated(fields)


def unavailable(ctx: Context, spec: MonitorSpec, why: str) -> None:
    """No check could run: the metrics source failed. Nothing is judged either way (no verdict metric)."""
    metrics.observe_monitor(ctx.namespace, ctx.name, [], {})
    ctx.conditions.set(ConditionType.READY, "False", Reason.METRICS_UNAVAILABLE, why)
    for kind, wanted in ((ConditionType.SLO_VIOLATED, spec.slo), (ConditionType.DRIFTED, spec.drift)):
        if wanted is not None:
            ctx.conditions.set(kind, "Unknown", Reason.METRICS_UNAVAILABLE, why)


def judge_slo(
    ctx: Context,
    spec: MonitorSpec,
    sha: str,
    checks: list[analysis.Check],
    totals: analysis.Totals,
    fields: Obj,
    now: datetime.datetime,
) -> None:
    by_name = {c.name: c for c in checks}
    error, latency = by_name.get("errorRate"), by_name.get("latencyP99")
    failed = [c for c in checks if c.verdict == "fail"]
    fields["slo"] = {
        k: v
        for k, v in {
            "errorRate": error.value if error else None,
            "p99LatencyMs": latency.value if latency else None,
            "requests": totals.requests(),
            "violated": bool(failed),
        }.items()
        if v is not None
    }
    said = "; ".join(f"{c.name}: {c.message}" for c in checks)[:1024]
    if failed:
        ctx.conditions.set(ConditionType.SLO_VIOLATED, "True", Reason.OBJECTIVE_MISSED, said)
        if spec.actions is not None and spec.actions.rollback:
            rejected = list(ctx.status.get("rejected") or [])
            if not any(r.get("sha256") == sha for r in rejected):
                reason = f"{failed[0].name}: {failed[0].message}"[:1024]
                entry = {"sha256": sha, "reason": reason, "time": canary.format_time(now)}
                fields["rejected"] = [*rejected, entry][-10:]
                fields["lastAction"] = {
                    "type": "Rollback",
                    "reason": reason,
                    "time": entry["time"],
                    "sha256": sha,
                }
                ctx.event(
                    "Warning",
                    "Rollback",
                    f"model {sha[:12]} of ModelDeployment {spec.deployment_ref.name} missed its SLO "
                    f"({reason}); it rolls back to its previous model",
                )
        elif spec.actions is None or spec.actions.alert:
            fields["lastAction"] = {"type": "Alert", "reason": said, "time": canary.format_time(now)}
    elif any(c.verdict == "inconclusive" for c in checks):
        ctx.conditions.set(ConditionType.SLO_VIOLATED, "Unknown", Reason.NOT_ENOUGH_TRAFFIC, said)
    else:
        ctx.conditions.set(ConditionType.SLO_VIOLATED, "False", Reason.WITHIN_OBJECTIVES, said)


def judge_drift(
    ctx: Context, spec: MonitorSpec, baseline: Obj | None, totals: analysis.Totals, fields: Obj
) -> analysis.Check | None:
    assert spec.drift is not None
    if not baseline or not baseline.get("features"):
        ctx.conditions.set(
            ConditionType.DRIFTED,
            "Unknown",
            Reason.NO_BASELINE,
            "the served model has no training baseline (baseline.json), so drift can never be judged",
        )
        return None
    verdict = stats.judge_drift(
        baseline,
        totals.feature_counts(baseline),
        method=spec.drift.method,
        threshold=spec.drift.threshold,
        min_samples=spec.drift.min_samples,
        correction=spec.drift.correction,
    )
    check = drift_check(verdict)
    fields["driftScores"] = dict(list(verdict.scores.items())[:500]) or None
    fields["features"] = feature_scores(verdict) or None
    if verdict.verdict == "fail":
        ctx.conditions.set(ConditionType.DRIFTED, "True", Reason.DRIFT_DETECTED, check.message)
    elif verdict.verdict == "inconclusive":
        ctx.conditions.set(ConditionType.DRIFTED, "Unknown", Reason.NOT_ENOUGH_TRAFFIC, check.message)
    else:
        ctx.conditions.set(ConditionType.DRIFTED, "False", Reason.NO_DRIFT, check.message)
    return check


def retrain(
    ctx: Context, spec: MonitorSpec, check: analysis.Check, fields: Obj, now: datetime.datetime
) -> None:
    """One TrainingJob per retrain decision, within coolDown and maxRetrains."""
    plan = spec.actions.retrain if spec.actions is not None else None
    if plan is None:
        if spec.actions is None or spec.actions.alert:
            fields.setdefault(
                "lastAction", {"type": "Alert", "reason": check.message, "time": canary.format_time(now)}
            )
        return
    status = ctx.status
    made = int(status.get("retrains") or 0)
    if made >= plan.max_retrains:
        ctx.event(
            "Warning", "RetrainLimit", f"drift, but maxRetrains {plan.max_retrains} are made: {check.message}"
        )
        return
    last = status.get("lastRetrainTime")
    if last and (now - canary.parse_time(last)).total_seconds() < duration_seconds(plan.cool_down):
        return
    number = made + 1
    name = child_name(ctx.name, "retrain", str(number))
    job_spec = plan.template.spec.wire()
    job_spec["datasetRef"].pop("version", None)  # the newest version of the Dataset
    labels = {**(plan.template.labels or {}), LABEL_MONITOR: label_value(ctx.name)}
    manifest: Obj = {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels},
        "spec": job_spec,
    }
    created = ctx.kube.create(manifest)
    said = f"TrainingJob {name} {'created' if created is not None else 'already made'}: {check.message}"
    fields.update(
        retrains=number,
        lastRetrainTime=canary.format_time(now),
        lastAction={
            "type": "Retrain",
            "reason": said[:1024],
            "time": canary.format_time(now),
            "trainingJob": name,
        },
    )
    ctx.event("Normal", "Retrain", said[:1024])


def needs(spec: Obj) -> list[tuple[str, str]]:
    """A Monitor depends on the ModelDeployment it watches."""
    return [("ModelDeployment", str((spec.get("deploymentRef") or {}).get("name", "")))]


register(MONITOR, reconcile, needs)
