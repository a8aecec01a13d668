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
from kubeloop.controllers.jobs import parse_time, read_outcome, reason_word
from kubeloop.controllers.kube import Obj

HISTORY = 10


def refresh_in(spec: DatasetSpec, run: Obj, now: datetime.datetime) -> float | None:
    """Seconds until the next refresh is due (0 or less: due now); None when no refresh is coming. Pure."""
    if spec.refresh_interval is None or run.get("state") == "Running" or not run.get("completionTime"):
        return None
    elapsed = now - parse_time(run["completionTime"])
    return seconds(spec.refresh_interval) - elapsed.total_seconds()


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
    due = refresh_in(spec, run, datetime.datetime.now(datetime.UTC))
    if run.get("generation") != ctx.generation:
        refresh = 0
    elif due is not None and due <= 0:
        refresh = int(run.get("refresh", 0)) + 1
    else:
        refresh = int(run.get("refresh", 0))
        if due is not None:
            ctx.requeue_after(due)  # refreshInterval is the one reason a Dataset needs time
    name = ingest_job_name(ctx.name, ctx.generation, refresh)
    if run.get("job") == name and run.get("state") in ("Succeeded", "Failed"):
        return {}  # this run is recorded; its Job may be gone and is not needed again

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
        if not status.get("version"):
            ctx.conditions.set("Ready", "False", "Ingesting", f"ingest Job {name} is running")
        ctx.conditions.set("Validated", "Unknown", "Ingesting", f"ingest Job {name} is running")
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
        "Ready", "True", "Ingested", f"version {version} with {fields['rows']} rows is available"
    )
    return fields


register(DATASET, reconcile)
