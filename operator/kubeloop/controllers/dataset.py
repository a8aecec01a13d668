"""Dataset controller: runs the ingest Job and records the snapshot it made."""

from __future__ import annotations

import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from kubeloop.api import DATASET
from kubeloop.api.common import duration_seconds as seconds
from kubeloop.api.conditions import Reason
from kubeloop.api.dataset import DatasetSpec, FeatureSummary
from kubeloop.builders.dataset import ingest_job, ingest_job_name
from kubeloop.controllers.conditions import now
from kubeloop.controllers.errors import Invalid
from kubeloop.controllers.framework import Context, register
from kubeloop.controllers.jobs import (
    parse_time,
    prune,
    read_outcome,
    reason_word,
    retries,
    truncation_note,
)
from kubeloop.controllers.kube import Obj

HISTORY = 10


def refresh_in(spec: DatasetSpec, run: Obj, now: datetime.datetime) -> float | None:
    """Seconds until the next refresh is due (0 or less: due now); None when no refresh is coming. Pure."""
    if spec.refresh_interval is None or run.get("state") == "Running" or not run.get("completionTime"):
        return None
    elapsed = now - parse_time(run["completionTime"])
    return seconds(spec.refresh_interval) - elapsed.total_seconds()


def next_run(
    spec: DatasetSpec, run: Obj, generation: int, now: datetime.datetime
) -> tuple[int, float | None]:
    """The run this reconcile is about (its refresh number) and the seconds until the next refresh is due
    (None: none is waited for). A finished run, failed or not, stays the current one until the spec
    changes (a new generation starts at 0) or its refresh is due: a failed ingest is not retried in a loop,
    only by its Job's own pod retries. Pure."""
    if run.get("generation") != generation:
        return 0, None
    due = refresh_in(spec, run, now)
    if due is not None and due <= 0:
        return int(run.get("refresh", 0)) + 1, None
    return int(run.get("refresh", 0)), due


def _statistics(raw: Any) -> dict[str, Obj] | None:
    """Keep the summary fields status has room for; the full baseline stays in the store."""
    if not isinstance(raw, dict):
        return None
    keys = set(FeatureSummary.model_fields)
    kept = {}
    for feature, summary in list(raw.items())[:500]:
        if isinstance(summary, dict) and summary.get("kind") in ("numeric", "categorical"):
            values = {k: v for k, v in summary.items() if k in keys}
            if isinstance(values.get("categories"), list):
                values["categories"] = len(values["categories"])
            try:
                kept[str(feature)] = FeatureSummary.model_validate(values).wire()
            except ValidationError:
                continue
    return kept


def reconcile(ctx: Context) -> BaseModel:
    try:
        spec = DatasetSpec.model_validate(ctx.spec)
    except ValidationError as error:
        raise Invalid(Reason.INVALID_SPEC, f"the spec does not match the API: {error}") from None
    return ctx.updated(ingest(ctx, spec))


def ingest(ctx: Context, spec: DatasetSpec) -> Obj:
    """Run the ingest Job of this generation (or refresh) and record what it made: the status fields."""
    status = ctx.status
    run = dict(status.get("ingest") or {})
    refresh, due = next_run(spec, run, ctx.generation, datetime.datetime.now(datetime.UTC))
    if due is not None:
        ctx.requeue_after(due)  # refreshInterval is the one reason a Dataset needs time
    name = ingest_job_name(ctx.name, ctx.generation, refresh)
    recorded = run.get("job") == name and run.get("state") in ("Succeeded", "Failed")
    # Finished Jobs beyond the history limits go; this run's stays until its outcome is in status.
    pruned = prune(
        ctx.kube,
        ctx.cache.children("Job", "Dataset", ctx.namespace, ctx.name),
        keep=set() if recorded else {name},
        successful=ctx.settings.successful_jobs_history_limit,
        failed=ctx.settings.failed_jobs_history_limit,
    )
    if pruned:
        ctx.logger.info("deleted finished ingest Jobs beyond the history limits: %s", ", ".join(pruned))
    if recorded:
        # A failed run, too, waits for the next refresh or spec change (a new Job name): no hot loop.
        return {}

    job = ctx.cache.child("Job", "Dataset", ctx.namespace, ctx.name, name)
    if job is None:
        manifest = ingest_job(
            name=ctx.name,
            namespace=ctx.namespace,
            spec=spec,
            generation=ctx.generation,
            refresh=refresh,
            settings=ctx.settings,
        )
        job = ctx.kube.create(ctx.adopt(manifest)) or manifest
    fields: Obj = {
        "ingest": {"job": name, "generation": ctx.generation, "refresh": refresh, "state": "Running"}
    }
    result = read_outcome(ctx.cache, ctx.kube, job)
    if result.state == "Running":
        reason, message = "Ingesting", f"ingest Job {name} is running"
        tried = retries(ctx.cache.job_pods(ctx.namespace, name))
        if tried is not None:
            reason = "Retrying"
            message = (
                f"ingest Job {name} is retrying: {tried.attempts} attempt(s) in {tried.pods} pod(s) failed "
                f"so far; last error: {tried.last_error}"
            )
        if not status.get("version"):
            ctx.conditions.set("Ready", "False", reason, message)
        ctx.conditions.set("Validated", "Unknown", reason, message)
        return fields
    fields["ingest"].update(state=result.state, completionTime=now())
    if result.state == "Failed":
        message = f"ingest Job {name} failed: {result.message}"
        ctx.conditions.set("Validated", "False", reason_word(result.reason), message)
        if status.get("version"):
            ctx.conditions.set(
                "Ready", "True", "Ingested", f"version {status['version']} is available; {message}"
            )
        else:
            ctx.conditions.set("Ready", "False", "IngestFailed", message)
        return fields

    facts = result.result
    version = str(facts.get("version", ""))[:16]
    if not version or not facts.get("artifactURI"):
        ctx.conditions.set(
            "Ready", "False", "InvalidResult", f"ingest Job {name} reported no version/artifactURI"
        )
        fields["ingest"]["state"] = "Failed"
        return fields
    history = list(status.get("history") or [])
    if not history or history[0].get("version") != version:
        entry = {
            "version": version,
            "rows": int(facts.get("rows", 0)),
            "artifactURI": facts["artifactURI"],
            "ingestedAt": now(),
        }
        history = [entry, *history][:HISTORY]
        ctx.event("Normal", "NewVersion", f"Dataset version {version} with {entry['rows']} rows")
    fields.update(
        version=version,
        sha256=facts.get("sha256"),
        rows=int(facts.get("rows", 0)),
        columns=int(facts["columns"]) if isinstance(facts.get("columns"), int) else None,
        artifactURI=facts["artifactURI"],
        statistics=_statistics(facts.get("statistics")),
        history=history,
    )
    ctx.conditions.set("Validated", "True", "Validated", f"version {version} passed validation")
    ctx.conditions.set(
        "Ready",
        "True",
        "Ingested",
        f"version {version} with {fields['rows']} rows is available{truncation_note(facts)}",
    )
    return fields


register(DATASET, reconcile)
